"""The main job: a bundle round trip (upgraded to a full Saver demo once the Saver lands)."""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

from jaxsaver import BundleReader, BundleWriter


def main(argv: list[str] | None = None) -> int:
    directory = (argv or sys.argv[1:] or [tempfile.mkdtemp(prefix="jaxsaver-demo-")])[0]
    prefix = os.path.join(directory, "demo")
    rng = np.random.default_rng(0)
    tensors = {"dense/kernel": rng.normal(size=(4, 3)).astype(np.float32), "step": np.int64(7)}
    with BundleWriter(prefix) as writer:
        for name, value in tensors.items():
            writer.add(name, value)
    print(f"wrote {prefix}.index and {prefix}.data-00000-of-00001")
    with BundleReader(prefix) as reader:
        for name in reader.keys():
            print(f"  {name}: {reader.dtype(name)} {list(reader.shape(name))}")
            assert np.array_equal(reader.get_tensor(name), tensors[name])
    print("restored every tensor bit-exactly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

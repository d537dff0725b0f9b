"""Reading a tensor stored as many slices: time against the slice count (issue 12, item 6).

Writes one float32 tensor of shape ``(n, 4)`` as ``n`` one-row slices, then times
``get_tensor``, ``get_slice`` (all but the first and last rows) and ``restore_as_numpy``. Before
the fix these grew with ``n**2`` (1.65 s at 1 024 slices, 36 s at 4 096); they now grow with
``n`` (the overlap check marks the slices on the grid their boundaries draw).

Usage::

    python benchmarks/slices_bench.py                    # 1024 2048 4096 65536
    python benchmarks/slices_bench.py --counts 1024 8192
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from jaxsaver import BundleReader, BundleWriter, restore_as_numpy


def bench(n: int, directory: str) -> dict[str, float]:
    prefix = os.path.join(directory, f"sliced{n}")
    with BundleWriter(prefix) as writer:
        for i in range(n):
            writer.add_slice("t", (n, 4), ((i, 1), (0, 4)), np.full((1, 4), i, np.float32))
    out = {"slices": n, "index_kib": os.path.getsize(prefix + ".index") / 1024}
    with BundleReader(prefix) as reader:
        start = time.perf_counter()
        whole = reader.get_tensor("t")
        out["get_tensor_s"] = time.perf_counter() - start
        start = time.perf_counter()
        reader.get_slice("t", (slice(1, n - 1),))
        out["get_slice_s"] = time.perf_counter() - start
    start = time.perf_counter()
    restore_as_numpy(prefix)
    out["restore_as_numpy_s"] = time.perf_counter() - start
    assert whole[:, 0].tolist() == list(range(n))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1024, 2048, 4096, 65536])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        print(f"{'slices':>7} {'index KiB':>10} {'get_tensor s':>13} {'get_slice s':>12} {'restore_as_numpy s':>19}")
        for n in args.counts:
            r = bench(n, directory)
            print(f"{r['slices']:>7} {r['index_kib']:>10.0f} {r['get_tensor_s']:>13.3f} {r['get_slice_s']:>12.3f} "
                  f"{r['restore_as_numpy_s']:>19.3f}")


if __name__ == "__main__":
    main()

"""Metadata speed: ``list_variables`` on a 100 000-tensor checkpoint (target: <= 0.2 s, index only).

Writes the checkpoint once (tiny tensors under nested names, as a large model's optimizer state
looks), removes its data file so any data read would fail, then times fresh-reader calls of
``list_variables``, ``get_variable_to_shape_map``/``dtype_map``, ``debug_string`` and ``tree``.

Usage: python benchmarks/inspect_bench.py [--tensors N] [--repeat R] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import glob
import os
import pstats
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxsaver import BundleWriter  # noqa: E402
from jaxsaver.reader import load_checkpoint, list_variables  # noqa: E402


def write_checkpoint(prefix: str, n: int) -> None:
    value = np.zeros((2,), np.float32)
    with BundleWriter(prefix) as w:
        for i in range(n):
            w.add(f"model/block_{i // 1000:03d}/layer_{i % 1000:03d}/kernel", value)


def timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print where list_variables spends its time")
    args = parser.parse_args(argv)

    directory = tempfile.mkdtemp(prefix="jaxsaver-inspect-bench-")
    prefix = os.path.join(directory, "model")
    start = time.perf_counter()
    write_checkpoint(prefix, args.tensors)
    print(f"wrote {args.tensors} tensors in {time.perf_counter() - start:.2f} s; "
          f"index {os.path.getsize(prefix + '.index') / 2**20:.1f} MiB")
    for data in glob.glob(prefix + ".data-*"):
        os.remove(data)  # proves the calls below read only the index

    names = list_variables(prefix)
    assert len(names) == args.tensors, len(names)
    results = {
        "list_variables": timed(lambda: list_variables(prefix), args.repeat),
        "open + shape/dtype maps": timed(
            lambda: (lambda r: (r.get_variable_to_shape_map(), r.get_variable_to_dtype_map()))(load_checkpoint(prefix)),
            args.repeat,
        ),
        "debug_string": timed(lambda: load_checkpoint(prefix).debug_string(), max(1, args.repeat // 2)),
        "tree": timed(lambda: load_checkpoint(prefix).tree(), max(1, args.repeat // 2)),
    }
    for what, (best, median) in results.items():
        print(f"{what:28s} best {best * 1000:8.1f} ms   median {median * 1000:8.1f} ms")
    best = results["list_variables"][0]
    verdict = "OK" if best <= 0.2 else "SLOWER than the 0.2 s target"
    print(f"list_variables on {args.tensors} tensors: {best:.3f} s ({verdict}); data file absent: index only")

    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        list_variables(prefix)
        profile.disable()
        pstats.Stats(profile).sort_stats("cumulative").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Process 0's commit of a multi-process save at 1 000+ hosts, simulated (docs/multihost.md).

Writes ``--hosts`` real part bundles of ``--entries`` tensors each, as ``--hosts`` processes
would (every tensor partitioned over all hosts: each part holds one slice of each, 4 float32
elements), then times process 0's commit as ``jaxsaver._multiprocess.write_distributed`` runs
it: read and check every part index (``read_part_index``, 16 at a time), merge them (``merged_index``), write
the ``.index``. Peak Python memory of the merge is measured with ``tracemalloc`` (a separate,
slower pass), and the process's peak RSS is reported too. The coordination-service traffic of
one save is computed from the same sizes the code publishes.

Results (2026-12-02; 2 CPUs shared with other jobs, load average 12-14, so CPU seconds are the
figure to read)::

    hosts  entries  read part indexes  merge     commit CPU (wall)  merged .index  parts in memory  merge peak
      128   12 800  0.29 s CPU         0.33 s    0.63 s (2.2 s)     0.43 MiB        5.5 MiB           8.7 MiB
     1024  102 400  1.99 s CPU         2.99 s    4.99 s (37.9 s)    3.56 MiB       44.9 MiB          68.3 MiB

Linear in the entries (about 50 µs of CPU each); analysis in docs/multihost.md.

Usage::

    python benchmarks/multihost_merge.py                      # 1024 hosts x 100 entries
    python benchmarks/multihost_merge.py --hosts 128 1024 4096 --entries 100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxsaver._bundle.merge import merged_index, read_part_index  # noqa: E402
from jaxsaver._multiprocess import _read_parts  # noqa: E402
from jaxsaver._bundle.writer import BundleWriter  # noqa: E402
from jaxsaver._store import resolve  # noqa: E402
from jaxsaver.distributed import offsets  # noqa: E402


def write_parts(directory: str, hosts: int, entries: int, elements: int) -> list[str]:
    prefixes = []
    for host in range(hosts):
        prefix = os.path.join(directory, "model-1_temp", f"part-{host:05d}-of-{hosts:05d}")
        writer = BundleWriter(prefix)
        for t in range(entries):
            array = np.full((elements,), host + t / 1000, np.float32)
            writer.add_slice(f"layer_{t:03d}/kernel", (hosts * elements,), ((host * elements, elements),), array)
        writer.finish(write_index=True)
        prefixes.append(prefix)
    return prefixes


def commit(store, directory: str, prefixes: list[str]) -> tuple[dict, int]:
    """Process 0's commit, timed per phase: (wall seconds, CPU seconds) each."""
    clocks = [(time.perf_counter(), time.process_time())]
    parts = _read_parts(store, prefixes, [None] * len(prefixes), [], range(0))  # as process 0 does
    clocks.append((time.perf_counter(), time.process_time()))
    index, _ = merged_index(store, os.path.join(directory, "model-1"), parts)
    clocks.append((time.perf_counter(), time.process_time()))
    store.write(os.path.join(directory, "model-1.index"), index)
    clocks.append((time.perf_counter(), time.process_time()))
    phases = {}
    for name, (a, b) in zip(("read_part_indexes", "merge", "write_index"), zip(clocks, clocks[1:])):
        phases[name + "_wall_s"] = round(b[0] - a[0], 3)
        phases[name + "_cpu_s"] = round(b[1] - a[1], 3)
    phases["commit_wall_s"] = round(clocks[-1][0] - clocks[0][0], 3)
    phases["commit_cpu_s"] = round(clocks[-1][1] - clocks[0][1], 3)
    return phases, len(index)


def coordination_bytes(hosts: int, local_leaves: int) -> dict[str, int]:
    """Bytes through the coordination service for one save, from what the code publishes."""
    digests = {f"leaf_{i:03d}/state": "0123456789abcdef" for i in range(local_leaves)}
    parts_value = len(json.dumps({"parts": 1, "digests": digests}, sort_keys=True))
    # Worst case: part counts that differ (equal counts publish {"each": n}, a few bytes).
    verdict_parts = len(json.dumps({"result": json.dumps({"offsets": offsets([1] * hosts), "total": hosts})}))
    verdict_ok = len(json.dumps({"result": "ok"}))
    return {
        "set_ops": 3 * hosts + 3,  # a value per process per step, a verdict per step
        "blocking_gets": 3 * (hosts - 1),
        "bytes_in": hosts * (parts_value + 2 * len("ok")),
        "bytes_out": (hosts - 1) * (verdict_parts + 2 * verdict_ok),
        "verdict_parts_bytes": verdict_parts,
    }


def run(hosts: int, entries: int, elements: int) -> dict:
    directory = tempfile.mkdtemp(prefix="multihost_merge_")
    try:
        store, _ = resolve(directory + "/x")
        t = time.perf_counter()
        prefixes = write_parts(directory, hosts, entries, elements)
        write_s = time.perf_counter() - t
        phases, index_bytes = commit(store, directory, prefixes)
        tracemalloc.start()
        parts = [read_part_index(store, p) for p in prefixes]
        after_read, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        merged_index(store, os.path.join(directory, "model-1"), parts)
        _, merge_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        part_index_bytes = sum(os.path.getsize(p + ".index") for p in prefixes)
        return {
            "hosts": hosts, "entries_per_part": entries, "parts_written_s": round(write_s, 2), **phases,
            "part_indexes_mib": round(part_index_bytes / 2**20, 2), "merged_index_mib": round(index_bytes / 2**20, 2),
            "parts_in_memory_mib": round(after_read / 2**20, 1), "merge_peak_extra_mib": round(merge_peak / 2**20, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "loadavg_1m": os.getloadavg()[0],
            "coordination": coordination_bytes(hosts, 10),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1024])
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--elements", type=int, default=4)
    args = parser.parse_args()
    for hosts in args.hosts:
        print(json.dumps(run(hosts, args.entries, args.elements)), flush=True)


if __name__ == "__main__":
    main()

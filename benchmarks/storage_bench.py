"""Bundle write/read throughput per store, side by side with the raw disk.

Writes and reads the same arrays (default 256 MiB of float32 in 16 arrays) through
``BundleWriter.add`` + ``finish`` and ``BundleReader.get_tensor`` on

* ``raw disk``: ``ndarray.tofile`` of every array into one file + ``os.fsync``; ``readinto`` back
  (the reference: ratio 1.00);
* ``local``: a directory on local disk (``jaxsaver._store.local.LocalStore``, direct OS I/O);
* ``memory://``: tensorstore's memory kvstore (no I/O: the cost of the layer and its copies);
* ``s3:// (moto)``: tensorstore's S3 driver against moto's S3 server on 127.0.0.1 (a Python
  server in this process: it measures the protocol path, not S3).

Each row is the best of ``--reps`` runs (``--median`` for medians; the machine is shared); ratios are throughput relative to the raw disk (higher
is faster). Reads are warm-cache for every contender alike.

Usage::

    python benchmarks/storage_bench.py                    # 256 MiB, 16 arrays, 3 reps
    python benchmarks/storage_bench.py --size-mib 64 --reps 1 --no-s3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxsaver._bundle.reader import BundleReader  # noqa: E402
from jaxsaver._bundle.writer import BundleWriter  # noqa: E402
from jaxsaver._store import resolve  # noqa: E402

MIB = 1 << 20
BEST = True  # best-of-reps: this machine is shared and noisy; --median for medians


def _median_time(fn: Callable[[], None], reps: int, setup: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(reps):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) if BEST else statistics.median(times)


def _arrays(size_mib: int, count: int) -> list[np.ndarray]:
    per = size_mib * MIB // count // 4
    rng = np.random.default_rng(0)
    return [rng.standard_normal(per, dtype=np.float32) for _ in range(count)]


def bench_raw(directory: str, arrays: list[np.ndarray], reps: int) -> tuple[float, float]:
    path = os.path.join(directory, "raw.bin")

    def write() -> None:
        with open(path, "wb") as f:
            for a in arrays:
                a.tofile(f)
            f.flush()
            os.fsync(f.fileno())

    outs = [np.empty_like(a) for a in arrays]

    def read() -> None:
        with open(path, "rb", buffering=0) as f:
            for out in outs:
                f.readinto(memoryview(out).cast("B"))

    w = _median_time(write, reps)
    read()  # warm the page cache for every contender alike
    r = _median_time(read, reps)
    for a, b in zip(arrays, outs):
        assert np.array_equal(a, b)
    return w, r


def bench_bundle(prefix: str, arrays: list[np.ndarray], reps: int) -> tuple[float, float]:
    def write() -> None:
        with BundleWriter(prefix) as writer:
            for i, a in enumerate(arrays):
                writer.add(f"t{i:03d}", a)

    def read() -> None:
        with BundleReader(prefix) as reader:
            for i, a in enumerate(arrays):
                out = reader.get_tensor(f"t{i:03d}")
                assert out.shape == a.shape

    w = _median_time(write, reps)
    read()  # warm-up (page cache, connections)
    r = _median_time(read, reps)
    with BundleReader(prefix) as reader:
        assert np.array_equal(reader.get_tensor("t000"), arrays[0])
    return w, r


def _delete_prefix(prefix: str) -> None:
    store, key = resolve(prefix)
    for k in store.list(key):
        store.delete(k)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--arrays", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true", help="skip the moto S3 row")
    parser.add_argument("--median", action="store_true", help="medians instead of best-of-reps")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    global BEST
    BEST = not args.median

    arrays = _arrays(args.size_mib, args.arrays)
    total = sum(a.nbytes for a in arrays) / MIB
    rows: dict[str, tuple[float, float]] = {}
    directory = tempfile.mkdtemp(prefix="storage_bench_")
    server = None
    try:
        rows["raw disk"] = bench_raw(directory, arrays, args.reps)
        rows["local"] = bench_bundle(os.path.join(directory, "model"), arrays, args.reps)
        mem = f"memory://bench-{uuid.uuid4().hex[:8]}/model"
        rows["memory://"] = bench_bundle(mem, arrays, args.reps)
        _delete_prefix(mem)
        if not args.no_s3:
            try:
                from moto.server import ThreadedMotoServer
                import boto3
            except ImportError:
                print("s3 row skipped: moto[server] is not installed", file=sys.stderr)
            else:
                server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                server.start()
                host, port = server.get_host_and_port()
                endpoint = f"http://{host}:{port}"
                os.environ.update(
                    AWS_ENDPOINT_URL=endpoint, AWS_REGION="us-east-1",
                    AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                )
                import logging

                logging.getLogger("werkzeug").setLevel(logging.ERROR)
                boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench")
                rows["s3:// (moto)"] = bench_bundle("s3://bench/run/model", arrays, args.reps)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if server is not None:
            server.stop()

    raw_w, raw_r = rows["raw disk"]
    how = "median" if args.median else "best"
    print(f"{total:.0f} MiB in {len(arrays)} float32 arrays, {how} of {args.reps}; warm-cache reads")
    print(f"{'store':<14} {'write MiB/s':>12} {'vs raw':>7} {'read MiB/s':>11} {'vs raw':>7}")
    result = {}
    for name, (w, r) in rows.items():
        wr, rr = total / w, total / r
        print(f"{name:<14} {wr:>12.0f} {raw_w / w:>7.2f} {rr:>11.0f} {raw_r / r:>7.2f}")
        result[name] = {"write_mib_s": wr, "read_mib_s": rr, "write_vs_raw": raw_w / w, "read_vs_raw": raw_r / r}
    if args.json:
        print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

"""``python -m benchmarks``: one table of save/restore throughput against raw disk, TF, orbax,
safetensors and flax (issue 13).

Cases: (a) ``--size-mib`` (default 1024) of float32/bfloat16 in 64 arrays on 8 simulated devices,
mesh (4,2), specs P('x','y'), P('x'), P(None,'y'), P(); (b) 10 000 float32 tensors of 4 KiB
(per-tensor overhead); (c) opening a 100 000-tensor index (open + every name, dtype, shape);
(d) restores with the page cache warm and dropped, reported as separate columns.

Systems, each in its own process (its peak RSS is its own): raw numpy (every leaf's bytes into
one file + fsync / ``np.fromfile``: the limit), TF ``SaveV2``/``RestoreV2`` (``tf.raw_ops``, +
fsync), orbax ``StandardCheckpointer`` sync and async, ``safetensors.flax`` (unsharded: arrays come
back on one device), flax ``serialization.to_bytes`` + write + fsync (restore: ``msgpack_restore``
+ ``device_put`` onto the shardings), jaxsaver sync / async ``snapshot="host"`` /
``snapshot="device"``. Reference rows: a fresh host copy of every leaf (``np.array(x, copy=True)``,
what ``jax.device_get`` costs on an accelerator) and an on-device copy (``x.copy()``).

Each figure is the best of ``--reps`` after one untimed round. "blocked" is how long the save
call held the caller (the whole save for synchronous systems). Peak RSS: the most ``VmHWM`` rose
over the RSS before the call (``/proc/self/clear_refs``), for the save and for the cold restore.
Cold reads: ``echo 3 > /proc/sys/vm/drop_caches`` when permitted, else ``posix_fadvise(DONTNEED)``
on every file of the checkpoint (after ``sync``); the table says which.

Usage::

    python -m benchmarks                       # 1 GiB, 3 reps, every case and system (minutes)
    python -m benchmarks --size-mib 256 --reps 2 --cases ab --skip orbax_sync,orbax_async
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from typing import Any

MIB = 1 << 20

LABELS = {
    "raw": "raw numpy write+fsync / fromfile",
    "tf": "TF SaveV2 / RestoreV2",
    "orbax_sync": "orbax StandardCheckpointer sync",
    "orbax_async": "orbax StandardCheckpointer async",
    "safetensors": "safetensors.flax (unsharded)",
    "flax_msgpack": "flax serialization.to_bytes",
    "jaxsaver": "jaxsaver sync",
    "jaxsaver_async_host": "jaxsaver async snapshot=host",
    "jaxsaver_async_device": "jaxsaver async snapshot=device",
    "ref_host_copy": "ref: host copy of every leaf",
    "ref_device_copy": "ref: on-device copy of the tree",
}
CASES = {
    "a": "(a) {size} MiB f32/bf16, 64 arrays, mesh (4,2)",
    "b": "(b) 10 000 x 4 KiB float32",
    "c": "(c) open a 100 000-tensor index",
}
ORDER = ("raw", "tf", "orbax_sync", "orbax_async", "safetensors", "flax_msgpack",
         "jaxsaver", "jaxsaver_async_host", "jaxsaver_async_device", "ref_host_copy", "ref_device_copy")
# Case (c) is timed for the systems with an index to open; orbax would need minutes to write
# 100 000 arrays, and raw files and msgpack have no index.
OPEN_SYSTEMS = ("tf", "safetensors", "jaxsaver")
# Ratios printed per case: jaxsaver (sync) against each of these.
RATIO_AGAINST = ("raw", "orbax_sync", "tf", "safetensors")


def cold_mode() -> str:
    """``drop_caches`` if this process may write it, else ``fadvise``."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return "drop_caches"
    except OSError:
        return "fadvise"


def run_one(case: str, system: str, args: argparse.Namespace, mode: str, root: str) -> dict[str, Any]:
    """Runs one (case, system) in a subprocess; returns its JSON result (or the error)."""
    command = [
        sys.executable, "-m", "benchmarks._systems", "--case", case, "--system", system,
        "--size-mib", str(args.size_mib), "--reps", str(args.reps),
        "--dir", os.path.join(root, f"{case}_{system}"), "--cold", mode,
    ]
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, env=env, cwd=here)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {done.returncode}: {tail[0][:100]}"}


def _rate(nbytes: int, seconds: float | None) -> str:
    return "-" if not seconds else f"{nbytes / MIB / seconds:.0f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    """Throughput ratio jaxsaver/other from times (other time / jaxsaver time)."""
    return "-" if not a or not b else f"{b / a:.2f}x"


def table(results: dict[tuple[str, str], dict[str, Any]], args: argparse.Namespace) -> list[str]:
    header = ("case", "system", "save MiB/s", "blocked s", "restore warm MiB/s", "restore cold MiB/s",
              "open s", "save peak RSS +MiB", "restore peak RSS +MiB", "bit-exact")
    rows: list[tuple[str, ...]] = []
    for case in args.cases:
        title = CASES[case].format(size=args.size_mib)
        for system in ORDER:
            r = results.get((case, system))
            if r is None:
                continue
            if "error" in r:
                rows.append((title, LABELS[system], "error: " + r["error"], "", "", "", "", "", "", ""))
                continue
            n = r["nbytes"]
            rows.append((
                title, LABELS[system], _rate(n, r.get("save_s")), _seconds(r.get("blocked_s")),
                _rate(n, r.get("restore_warm_s")), _rate(n, r.get("restore_cold_s")), _seconds(r.get("open_s")),
                _mib(r.get("save_peak_rss")), _mib(r.get("restore_peak_rss")),
                {True: "yes", False: "NO", None: "-"}[r.get("bitexact")],
            ))
        js = results.get((case, "jaxsaver"), {})
        for other in RATIO_AGAINST:
            o = results.get((case, other))
            if not o or "error" in o or "error" in js or not js:
                continue
            rows.append((
                title, f"ratio jaxsaver / {other}", _ratio(js.get("save_s"), o.get("save_s")), "",
                _ratio(js.get("restore_warm_s"), o.get("restore_warm_s")),
                _ratio(js.get("restore_cold_s"), o.get("restore_cold_s")),
                _ratio(js.get("open_s"), o.get("open_s")), "", "", "",
            ))
        for mode, ref in (("jaxsaver_async_host", "ref_host_copy"), ("jaxsaver_async_device", "ref_device_copy"),
                          ("jaxsaver_async_host", "orbax_async")):
            a, b = results.get((case, mode)), results.get((case, ref))
            if a and b and "error" not in a and "error" not in b and a.get("blocked_s") and b.get("blocked_s"):
                rows.append((title, f"blocked {mode.split('_')[-1]} / {ref}", "",
                             f"{a['blocked_s'] / b['blocked_s']:.2f}x", "", "", "", "", "", ""))
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(header)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out.extend(line(r) for r in rows)
    return out


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", "--size", type=int, default=1024, help="case (a) total size (MiB)")
    parser.add_argument("--reps", type=int, default=3, help="timed rounds per system (best is kept)")
    parser.add_argument("--cases", default="abc", help="which cases, e.g. 'ab'")
    parser.add_argument("--systems", default=",".join(ORDER), help="comma-separated systems")
    parser.add_argument("--skip", default="", help="comma-separated systems to leave out")
    parser.add_argument("--dir", default=None, help="where checkpoints are written (default: a temp dir)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per (case, system)")
    parser.add_argument("--json", default=None, help="also write every raw result to this file")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    systems = [s for s in args.systems.split(",") if s and s not in skip]
    unknown = [s for s in systems if s not in LABELS]
    if unknown:
        parser.error(f"unknown systems {unknown}; known: {', '.join(ORDER)}")
    mode = cold_mode()
    root = tempfile.mkdtemp(prefix="jaxsaver_bench_", dir=args.dir)
    load_before = _loadavg()
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for case in args.cases:
        for system in systems:
            if case == "c" and system not in OPEN_SYSTEMS:
                continue
            print(f"running ({case}) {LABELS[system]} ...", file=sys.stderr, flush=True)
            results[(case, system)] = run_one(case, system, args, mode, root)
            print(f"  {json.dumps(results[(case, system)])}", file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({f"{c}/{s}": r for (c, s), r in results.items()}, f, indent=1)
    os.rmdir(root) if os.path.isdir(root) and not os.listdir(root) else None
    print(f"jaxsaver benchmarks, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}); "
          f"loadavg before {load_before}, after {_loadavg()}")
    print(f"best of {args.reps}; cold reads by {'drop_caches' if mode == 'drop_caches' else 'posix_fadvise DONTNEED per file'}; "
          "8 simulated CPU devices; MiB/s of tensor bytes; ratios are throughput jaxsaver/other")
    for row in table(results, args):
        print(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{c}/{s}": r for (c, s), r in results.items()}, f, indent=1)
    failed = [k for k, r in results.items() if "error" in r or r.get("bitexact") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

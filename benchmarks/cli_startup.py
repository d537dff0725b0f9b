"""Start-up time of the ``jaxsaver`` command and of ``import jaxsaver``, in fresh processes.

Writes a small checkpoint (float32, int64 and bfloat16 tensors) with ``BundleWriter``, then times
``python -m jaxsaver inspect/ls/verify`` and ``python -c "import jaxsaver"`` ``--repeat`` times
each and prints the median and minimum wall time, and whether JAX was imported. ``--root`` picks
the source tree to time (put first on ``PYTHONPATH``), so two trees can be compared::

    python benchmarks/cli_startup.py --root /path/to/old/checkout   # before
    python benchmarks/cli_startup.py                                  # this tree
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = (
    "import sys, runpy; sys.argv = ['jaxsaver', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('jaxsaver', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    "sys.stderr.write('\\nJAX_IMPORTED=%s\\n' % ('jax' in sys.modules))\n"
)


def _write_checkpoint(root: str, directory: str) -> str:
    code = (
        "import sys, numpy as np, ml_dtypes\n"
        "from jaxsaver import BundleWriter\n"
        "with BundleWriter(sys.argv[1]) as w:\n"
        "    w.add('params/w', np.ones((64, 64), np.float32))\n"
        "    w.add('params/b', np.arange(64, dtype=np.int64))\n"
        "    w.add('params/h', np.ones((8, 8), ml_dtypes.bfloat16))\n"
    )
    prefix = os.path.join(directory, "model-1")
    subprocess.run([sys.executable, "-c", code, prefix], check=True, env=_env(root), timeout=300, cwd=directory)
    return prefix


def _env(root: str) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def _time(cmd: list[str], root: str, repeat: int, cwd: str) -> dict[str, object]:
    times = []
    jax_imported = None
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(cmd, env=_env(root), capture_output=True, text=True, timeout=300, cwd=cwd)
        times.append(time.perf_counter() - start)
        if "JAX_IMPORTED=" in done.stderr:
            jax_imported = done.stderr.rsplit("JAX_IMPORTED=", 1)[1].strip() == "True"
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "jax_imported": jax_imported}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=HERE, help="source tree to time (default: this one)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        prefix = _write_checkpoint(args.root, directory)
        results = {"root": args.root, "python": sys.version.split()[0], "load_avg": os.getloadavg()[0]}
        results["python -c pass"] = _time([sys.executable, "-c", "pass"], args.root, args.repeat, directory)
        results["import jaxsaver"] = _time(
            [sys.executable, "-c", "import sys, jaxsaver; sys.stderr.write('JAX_IMPORTED=%s' % ('jax' in sys.modules))"],
            args.root, args.repeat, directory,
        )
        for sub in (["inspect", prefix], ["ls", directory], ["verify", prefix]):
            results[f"jaxsaver {sub[0]}"] = _time([sys.executable, "-c", _PROBE, *sub], args.root, args.repeat, directory)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

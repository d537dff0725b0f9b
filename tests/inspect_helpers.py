"""Checkpoints for the inspection tests, and TensorFlow's own answers about them.

One TensorFlow subprocess (TF takes seconds to import) writes the TF-made checkpoints — plain,
sliced, sharded-merged, TF2 object-based, strings — and records, for those and for one written
by jaxsaver, what TensorFlow's reader and ``inspect_checkpoint`` print. The result is cached for
the pytest process.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from jaxsaver import BundleWriter

CASES = ("plain", "sliced", "merged", "tf2", "strings", "ours")

_TF_SCRIPT = r'''
import base64, contextlib, io, json, os, sys
import numpy as np
import tensorflow as tf
from tensorflow.python.tools import inspect_checkpoint as ic

root = sys.argv[1]
rng = np.random.default_rng(0)
paths = {"ours": os.path.join(root, "ours", "model")}

def save(prefix, items):
    names, specs, tensors = zip(*items)
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(names), shape_and_slices=list(specs),
                      tensors=list(tensors))

p = paths["plain"] = os.path.join(root, "plain", "model-7")
save(p, [
    ("dense/kernel", "", rng.normal(size=(3, 4)).astype(np.float32)),
    ("dense/bias", "", np.array([0.5, -1.0, 2.0, 0.0], np.float32)),
    ("global_step", "", np.int64(7)),
    ("flags", "", np.array([True, False, True])),
    ("half", "", np.array([[1.5, -2], [np.inf, np.nan]], np.float16)),
    ("bf", "", tf.constant([1.25, -3.0], tf.bfloat16)),
    ("i8", "", np.arange(6, dtype=np.int8).reshape(2, 3)),
    ("c64", "", np.array([1 + 2j, -0.5j], np.complex64)),
    ("u16", "", np.array([1, 65535, 7], np.uint16)),
    ("d", "", np.array([[1e-8, 2.0], [3.0, 1e8]], np.float64)),
    ("big", "", np.arange(1200, dtype=np.float32).reshape(40, 30)),
    ("empty", "", np.zeros((0, 3), np.float32)),
    ("scalar_f", "", np.float32(2.5)),
])

p = paths["sliced"] = os.path.join(root, "sliced", "model")
full = np.arange(24, dtype=np.float32).reshape(4, 6)
save(p, [
    ("w", "4 6 0,2:-", full[0:2]),
    ("w", "4 6 2,2:0,3", full[2:4, 0:3]),
    ("w", "4 6 2,2:3,3", full[2:4, 3:6]),
    ("part/p", "6 2 0,3:0,2", np.ones((3, 2), np.int32)),
    ("part/p", "6 2 3,3:0,2", np.full((3, 2), 2, np.int32)),
    ("v", "", np.float64(1.5)),
])

d = os.path.join(root, "merged")
a, b = os.path.join(d, "tmp", "part-00000-of-00002"), os.path.join(d, "tmp", "part-00001-of-00002")
save(a, [("a", "", np.ones((2, 2), np.float32)), ("m", "4 2 0,2:-", np.zeros((2, 2), np.float32))])
save(b, [("c", "", np.int64(3)), ("m", "4 2 2,2:-", np.ones((2, 2), np.float32))])
p = paths["merged"] = os.path.join(d, "model")
tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=[a, b], destination_prefix=p)

m = tf.Module()
m.w = tf.Variable(rng.normal(size=(2, 3)).astype(np.float32))
m.layers = [tf.Variable([1.0, 2.0]), tf.Variable(3, dtype=tf.int64)]
m.table = {"a/b.c": tf.Variable(np.ones((2,), np.float64))}
ckpt = tf.train.Checkpoint(model=m, step=tf.Variable(5, dtype=tf.int32))
paths["tf2"] = ckpt.save(os.path.join(root, "tf2", "ckpt"))

p = paths["strings"] = os.path.join(root, "strings", "model")
save(p, [
    ("s0", "", np.array(b"hello", dtype=object)),
    ("s1", "", np.array([b"", b"a\x00b", b"\xff\xfe"], dtype=object)),
    ("s2", "", np.array([[b"x", "h\u00e9llo".encode()], [b"yy" * 10, b"z"]], dtype=object)),
    ("n", "", np.int32(1)),
])

def capture(fn, *args, **kwargs):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(*args, **kwargs)
    return out.getvalue()

def run_cli(argv):
    """TF's tool end to end (its argparse + absl main), as `python -m` would run it."""
    import runpy
    out, code = io.StringIO(), 0
    saved = sys.argv
    sys.argv = ["inspect_checkpoint"] + argv
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module("tensorflow.python.tools.inspect_checkpoint", run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        sys.argv = saved
    return {"stdout": out.getvalue(), "code": code}

defaults = np.get_printoptions()
cli = {"usage": run_cli([])}
refs = {}
for case, prefix in paths.items():
    r = tf.train.load_checkpoint(prefix)
    shapes = r.get_variable_to_shape_map()
    names = sorted(shapes)
    run = lambda **kw: capture(ic.print_tensors_in_checkpoint_file, prefix, kw.pop("tensor_name", ""),
                               kw.pop("all_tensors", False), **kw)
    ref = {
        "prefix": prefix,
        "debug_string": base64.b64encode(r.debug_string()).decode(),
        "shapes": shapes,
        "dtypes": {k: v.name for k, v in r.get_variable_to_dtype_map().items()},
        "list_variables": tf.train.list_variables(prefix),
        "tensors": {k: repr(r.get_tensor(k)) for k in names if shapes[k] is not None},
        "default": run(),
        "all_tensors": run(all_tensors=True),
        "all_tensor_names": run(all_tensor_names=True),
        "exclude": run(all_tensor_names=True, count_exclude_pattern="^[a-m]"),
        "tensor_name": {k: run(tensor_name=k) for k in names},
        "missing": run(tensor_name="no/such"),
    }
    ic.parse_numpy_printoption("precision=2")
    ic.parse_numpy_printoption("threshold=5")
    ref["printoptions"] = {k: run(tensor_name=k) for k in names}
    np.set_printoptions(**defaults)
    ref["cli_default"] = run_cli(["--file_name", prefix])
    ref["cli_all_tensors"] = run_cli(["--file_name=" + prefix, "--all_tensors"])
    np.set_printoptions(**defaults)
    refs[case] = ref
json.dump({"paths": paths, "refs": refs, "cli": cli}, open(os.path.join(root, "reference.json"), "w"))
'''


def write_ours(prefix: str) -> None:
    """A jaxsaver-written checkpoint with nested names, several dtypes and a sliced tensor."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    full = np.arange(12, dtype=np.float32).reshape(4, 3) / 4
    with BundleWriter(prefix) as w:
        w.add("params/Dense_0/kernel", np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4))
        w.add("params/Dense_0/bias", np.zeros(4, np.float32))
        w.add("opt/count", np.int32(3))
        w.add("note", np.array(b"trained", dtype=object))
        w.add_slice("sl", (4, 3), "0,2:-", full[:2])
        w.add_slice("sl", (4, 3), "2,2:-", full[2:])


def tf_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env.pop("XLA_FLAGS", None)
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


@functools.lru_cache(maxsize=None)
def tf_reference() -> dict:
    """``{"paths": {case: prefix}, "refs": {case: {...}}}``, made once per test process."""
    root = tempfile.mkdtemp(prefix="jaxsaver-inspect-")
    write_ours(os.path.join(root, "ours", "model"))
    script = os.path.join(root, "make_reference.py")
    with open(script, "w") as f:
        f.write(_TF_SCRIPT)
    proc = subprocess.run(
        [sys.executable, script, root], env=tf_env(), capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        raise RuntimeError(f"TensorFlow reference script failed:\n{proc.stderr[-4000:]}")
    with open(os.path.join(root, "reference.json")) as f:
        return json.load(f)

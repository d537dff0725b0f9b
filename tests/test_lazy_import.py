"""Reading needs no JAX: ``import jaxsaver``, ``CheckpointReader`` and the ``jaxsaver`` command's
reading subcommands run in a fresh process without importing it; the JAX-using names still load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxsaver
from jaxsaver import BundleWriter

TIMEOUT = 120

_PROBE = """
import contextlib, io, json, sys
import jaxsaver
from jaxsaver.cli import main
checks = {"import": "jax" in sys.modules, "pytest": "pytest" in sys.modules}
ckpt_dir, first, second = sys.argv[1:4]
with jaxsaver.CheckpointReader(second) as reader:
    checks["reader_keys"] = sorted(reader.get_variable_to_shape_map())
    checks["reader_value"] = reader.get_tensor("params/b").tolist()
codes = {}
for argv in (["inspect", first], ["inspect", "--file_name=" + first, "--tensor_name=params/b"],
             ["ls", ckpt_dir], ["tree", second], ["verify", second], ["diff", first, second]):
    with contextlib.redirect_stdout(io.StringIO()):
        codes[argv[0] + str(len(argv))] = main(argv)
checks["codes"] = codes
checks["jax"] = sorted(m for m in sys.modules if m == "jax" or m.startswith("jax."))
print(json.dumps(checks))
"""


@pytest.fixture
def checkpoints(tmp_path):
    import ml_dtypes

    def write(name, offset):
        with BundleWriter(str(tmp_path / name)) as w:
            w.add("params/w", np.ones((4, 4), np.float32) + offset)
            w.add("params/b", np.arange(3, dtype=np.int64))
            w.add("params/h", np.ones((2, 2), ml_dtypes.bfloat16))
        return str(tmp_path / name)

    first, second = write("model-1", 0), write("model-2", 1)
    (tmp_path / "checkpoint").write_text(
        f'model_checkpoint_path: "{second}"\nall_model_checkpoint_paths: "{first}"\n'
        f'all_model_checkpoint_paths: "{second}"\n'
    )
    return str(tmp_path), first, second


def test_reading_tools_never_import_jax(checkpoints, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *checkpoints], capture_output=True, text=True,
        timeout=TIMEOUT, env=os.environ.copy(), cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    checks = json.loads(done.stdout.strip().splitlines()[-1])
    assert checks["import"] is False
    assert checks["pytest"] is False  # only jaxsaver.testing imports pytest
    assert checks["reader_keys"] == ["params/b", "params/h", "params/w"]
    assert checks["reader_value"] == [0, 1, 2]
    # inspect, ls, tree, verify succeed; diff finds the changed tensor (exit 1)
    assert checks["codes"] == {"inspect2": 0, "inspect3": 0, "ls2": 0, "tree2": 0, "verify2": 0, "diff3": 1}
    assert checks["jax"] == []


def test_jax_names_load_on_first_use():
    done = subprocess.run(
        [sys.executable, "-c",
         "import sys, jaxsaver; assert 'jax' not in sys.modules; "
         "from jaxsaver import Saver, SaverBuilder; import jaxsaver.saver as m; "
         "assert Saver is m.Saver and 'jax' in sys.modules and jaxsaver.Saver is Saver; print('ok')"],
        capture_output=True, text=True, timeout=TIMEOUT, env=os.environ.copy(),
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_every_public_name_resolves():
    missing = [name for name in jaxsaver.__all__ if not hasattr(jaxsaver, name)]
    assert missing == []
    assert set(jaxsaver.__all__) <= set(dir(jaxsaver))
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        jaxsaver.NoSuchName  # noqa: B018

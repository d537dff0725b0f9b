"""The ``jaxsaver`` command line: TensorFlow ``inspect_checkpoint`` parity, ls, tree, verify, diff, stats."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jaxsaver import BundleReader, BundleWriter
from jaxsaver.cli import main
from jaxsaver.checkpoint_management import update_checkpoint_state

from inspect_helpers import CASES, tf_env, tf_reference

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ref():
    return tf_reference()


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------- inspect parity


@pytest.mark.parametrize("case", CASES)
def test_inspect_matches_tensorflow_cli(case, ref, capsys):
    """`jaxsaver inspect` prints what `python -m tensorflow.python.tools.inspect_checkpoint` prints."""
    r = ref["refs"][case]
    code, out, _ = run(capsys, "inspect", r["prefix"])
    assert (code, out) == (r["cli_default"]["code"], r["cli_default"]["stdout"])
    code, out, _ = run(capsys, "inspect", "--file_name=" + r["prefix"], "--all_tensors")
    assert (code, out) == (r["cli_all_tensors"]["code"], r["cli_all_tensors"]["stdout"])


@pytest.mark.parametrize("case", CASES)
def test_inspect_modes_match_tensorflow(case, ref, capsys):
    r = ref["refs"][case]
    prefix = r["prefix"]
    assert run(capsys, "inspect", prefix, "--all_tensor_names")[1] == r["all_tensor_names"]
    assert run(capsys, "inspect", prefix, "--all_tensor_names", "--count_exclude_pattern", "^[a-m]")[1] == r["exclude"]
    assert run(capsys, "inspect", prefix, "--tensor_name", "no/such") == (1, r["missing"], "")  # same text as TF; exit 1 (TF exits 0)
    for name, expected in r["tensor_name"].items():
        assert run(capsys, "inspect", prefix, "--tensor_name", name)[1] == expected, name
    for name, expected in r["printoptions"].items():
        code, out, _ = run(capsys, "inspect", prefix, "--tensor_name", name, "--printoptions", "precision=2", "threshold=5")
        assert out == expected, name
    # print options do not leak out of main()
    assert np.get_printoptions()["precision"] == 8


def test_inspect_real_tensorflow_process(ref, capsys):
    """One genuine `python -m` run of TensorFlow's tool (sliced keys: raw bytes in the output)."""
    r = ref["refs"]["sliced"]
    proc = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.inspect_checkpoint", "--file_name", r["prefix"]],
        env=tf_env(), capture_output=True, timeout=240,
    )
    ours = subprocess.run(
        [sys.executable, "-m", "jaxsaver.cli", "inspect", r["prefix"]],
        capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert proc.returncode == ours.returncode == 0
    assert ours.stdout.splitlines() == proc.stdout.splitlines()
    assert ours.stdout == proc.stdout


def test_inspect_without_file_prints_jaxsavers_usage(capsys):
    # It used to print TF's `inspect_checkpoint --file_name=...` usage and exit 1.
    code, out, err = run(capsys, "inspect")
    assert code == 2 and out == ""
    assert err.startswith("usage: jaxsaver inspect") and "--file_name=checkpoint_file_name" not in err
    assert "jaxsaver inspect: error: a checkpoint PATH is required" in err


def test_inspect_missing_tensor_keeps_tfs_text_and_exits_nonzero(ref, capsys):
    # TF's tool prints this and exits 0; a script could not tell the tensor was missing.
    code, out, _ = run(capsys, "inspect", ref["refs"]["ours"]["prefix"], "--tensor_name", "no/such")
    assert (code, out) == (1, "Tensor no/such not found in checkpoint\n")


def test_version(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"jaxsaver {version('jaxsaver')}"


@pytest.mark.parametrize("command", ["inspect", "ls", "tree", "verify", "diff", "stats"])
def test_positional_arguments_have_help(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    block = out.split("positional arguments:")[1].split("options:")[0]
    for line in block.strip().splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            assert len(line.split(None, 1)) == 2, f"{command}: no help for {line.strip()}"


def test_inspect_json(ref, capsys):
    r = ref["refs"]["plain"]
    code, out, _ = run(capsys, "inspect", r["prefix"], "--json")
    data = json.loads(out)
    assert code == 0 and data["total_params"] == 1242
    assert {t["name"]: t["shape"] for t in data["tensors"]} == r["shapes"]
    code, out, _ = run(capsys, "inspect", r["prefix"], "--json", "--tensor_name", "dense/bias")
    assert json.loads(out)["tensors"][0]["value"] == [0.5, -1.0, 2.0, 0.0]
    code, out, _ = run(capsys, "inspect", ref["refs"]["strings"]["prefix"], "--json", "--all_tensors")
    values = {t["name"]: t["value"] for t in json.loads(out)["tensors"]}
    assert values["s0"] == "hello" and values["s1"] == ["", "a\x00b", "\\xff\\xfe"]


# ---------------------------------------------------------------------------------- errors


def test_errors_are_one_line_with_hint(tmp_path, ref, capsys):
    prefix = ref["refs"]["plain"]["prefix"]
    code, out, err = run(capsys, "inspect", prefix + ".index")
    assert code == 2 and out == ""
    first, hint = err.splitlines()
    assert "without '.index'" in first and first.startswith("jaxsaver inspect: error:")
    assert hint.startswith("hint:")
    code, out, err = run(capsys, "tree", str(tmp_path / "nothing"))
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 2
    code, out, err = run(capsys, "ls", str(tmp_path))
    assert code == 2 and "checkpoint" in err
    code, out, err = run(capsys, "stats", prefix, "no/such")
    assert code == 2 and "Key no/such not found in checkpoint" in err and "--all_tensor_names" in err
    code, out, err = run(capsys, "inspect", prefix, "--printoptions", "nosuch=1")
    assert code == 2 and "not a valid printoption" in err
    code, out, err = run(capsys, "inspect", prefix, "--count_exclude_pattern", "(")
    assert code == 2 and len(err.splitlines()) == 2


# ---------------------------------------------------------------------------------- verify


def _corrupt(prefix: str, names: list[str]) -> None:
    with BundleReader(prefix) as reader:
        spots = [(reader.info(n).entry.shard_id, reader.info(n).entry.offset + reader.info(n).entry.size // 2) for n in names]
        num_shards = reader.num_shards
    for shard, offset in spots:
        path = f"{prefix}.data-{shard:05d}-of-{num_shards:05d}"
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x5A]))


def test_verify_names_every_corrupted_tensor(tmp_path, capsys):
    prefix = str(tmp_path / "model")
    rng = np.random.default_rng(1)
    with BundleWriter(prefix) as w:
        for i in range(6):
            w.add(f"layer{i}/w", rng.normal(size=(8, 8)).astype(np.float32))
        w.add("names", np.array([b"alpha", b"beta", b"gamma"], dtype=object))
    assert run(capsys, "verify", prefix)[0] == 0
    _corrupt(prefix, ["layer1/w", "layer4/w", "names"])
    code, out, _ = run(capsys, "verify", prefix)
    assert code == 1
    bad = sorted(line.split()[1].rstrip(":") for line in out.splitlines() if line.startswith("CORRUPT"))
    assert bad == ["layer1/w", "layer4/w", "names"]
    assert "3 corrupt" in out.splitlines()[-1]
    code, out, _ = run(capsys, "verify", prefix, "--json")
    data = json.loads(out)
    assert code == 1 and not data["ok"] and sorted(p["tensor"] for p in data["problems"]) == bad


def test_verify_names_corrupt_slices(ref, tmp_path, capsys):
    src = ref["refs"]["sliced"]["prefix"]
    dst = tmp_path / "sliced"
    shutil.copytree(os.path.dirname(src), dst)
    prefix = str(dst / os.path.basename(src))
    with BundleReader(prefix) as reader:
        key = [k for k in reader.raw_keys() if k.startswith("\x00w")][1]
    _corrupt(prefix, [key.encode("utf-8", "surrogateescape")])
    code, out, _ = run(capsys, "verify", prefix)
    assert code == 1
    assert "CORRUPT w [slice 2,2:0,3]" in out


def test_verify_all_checks_every_listed_checkpoint(tmp_path, capsys):
    import jax.numpy as jnp

    from jaxsaver import Saver

    saver = Saver(template={"w": jnp.zeros((64,))}, max_to_keep=3)
    prefixes = [saver.save({"w": jnp.full((64,), float(s))}, tmp_path / "m", global_step=s) for s in (1, 2, 3)]
    _corrupt(prefixes[0], ["w"])  # an older checkpoint: plain `verify DIR` checks only the latest
    assert run(capsys, "verify", str(tmp_path))[0] == 0
    code, out, _ = run(capsys, "verify", str(tmp_path), "--all")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "CORRUPT w: " + lines[0].split(": ", 1)[1] and "m-1" in lines[1]
    assert sum("all checksums match" in line for line in lines) == 2


# ---------------------------------------------------------------------------------- ls, tree, diff, stats, demo


def test_ls_lists_the_history(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    paths = []
    for step in (10, 20, 30):
        prefix = str(d / f"model-{step}")
        with BundleWriter(prefix) as w:
            w.add("w", np.zeros((step,), np.float32))
        paths.append(prefix)
    update_checkpoint_state(str(d), paths[-1], paths, all_model_checkpoint_timestamps=[1.0, 2.0, 3.0])
    os.remove(paths[0] + ".index")
    code, out, _ = run(capsys, "ls", str(d))
    lines = out.splitlines()
    assert code == 0 and "3 checkpoints" in lines[0]
    assert "missing" in lines[2] and lines[4].startswith("*") and "30" in lines[4]
    code, out, _ = run(capsys, "ls", str(d), "--json")
    rows = json.loads(out)["checkpoints"]
    assert [r["step"] for r in rows] == [10, 20, 30] and [r["exists"] for r in rows] == [False, True, True]
    assert rows[2]["latest"] and rows[2]["bytes"] > rows[1]["bytes"] > 0 and rows[2]["timestamp"] == 3.0


def test_tree_text_and_json(ref, capsys):
    code, out, _ = run(capsys, "tree", ref["refs"]["tf2"]["prefix"])
    assert code == 0
    assert "model/" in out and "a/b.c" in out and ".ATTRIBUTES" not in out
    code, out, _ = run(capsys, "tree", ref["refs"]["ours"]["prefix"], "--json")
    data = json.loads(out)
    assert data["num_tensors"] == 5 and data["num_elements"] == 30
    assert [c["name"] for c in data["children"]] == ["opt", "params", "note", "sl"]


def test_diff_exit_codes(tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    with BundleWriter(a) as w:
        w.add("x", np.arange(4, dtype=np.float32))
        w.add("gone", np.int32(1))
    with BundleWriter(b) as w:
        w.add("x", np.arange(4, dtype=np.float32) + np.array([0, 0, 0.5, 0], np.float32))
        w.add("new", np.int32(1))
    assert run(capsys, "diff", a, a)[0] == 0
    code, out, _ = run(capsys, "diff", a, b)
    assert code == 1 and "- gone" in out and "+ new" in out and "~ x: 1 elements differ, max abs diff 0.5" in out
    code, out, _ = run(capsys, "diff", a, b, "--json")
    data = json.loads(out)
    assert code == 1 and not data["identical"] and data["common"][0]["max_abs_diff"] == 0.5


def test_stats(ref, capsys):
    code, out, _ = run(capsys, "stats", ref["refs"]["plain"]["prefix"], "half", "--json")
    [s] = json.loads(out)
    assert code == 0 and (s["nan_count"], s["inf_count"], s["min"], s["max"]) == (1, 1, -2.0, 1.5)


def test_no_command_and_help(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "inspect" in capsys.readouterr().out


def test_demo_runs(tmp_path, capsys):
    code, out, _ = run(capsys, "demo", "--dir", str(tmp_path))
    assert code == 0 and "restored" in out

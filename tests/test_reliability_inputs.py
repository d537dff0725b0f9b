"""Corrupt, fuzzed and hostile inputs: exact data or a typed error, never a crash, a hang, a wrong
value, an unbounded allocation, or a file touched outside the checkpoint's directory."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxsaver
from jaxsaver._bundle.layout import MAX_GRID_CELLS, TooIrregular, find_overlap
from jaxsaver._format.slices import intersect_resolved

FUZZ = os.path.join(os.path.dirname(__file__), "reliability_fuzz.py")
FUZZ_EXAMPLES = int(os.environ.get("JAXSAVER_FUZZ_EXAMPLES", "600"))


def _small_checkpoint(directory: str) -> tuple[str, dict]:
    mesh = Mesh(np.array(jax.devices()), ("x",))
    values = {
        "w": jax.device_put(np.arange(32, dtype=np.float32).reshape(8, 4), NamedSharding(mesh, PartitionSpec("x"))),
        "b": np.array([7, -3, 11], dtype=np.int32),
        "name": "hello",
    }
    saver = jaxsaver.Saver(template=values, sharded=True)
    prefix = saver.save(values, os.path.join(directory, "model"), global_step=1)
    want = {"w": np.arange(32, dtype=np.float32).reshape(8, 4), "b": values["b"], "name": b"hello"}
    return prefix, want


def _exact(got: dict, want: dict) -> bool:
    return set(got) == set(want) and all(
        np.asarray(got[k]).tobytes() == np.asarray(want[k]).tobytes() if k != "name" else got[k] == want[k]
        for k in want
    )


def test_every_byte_flip_and_truncation_gives_exact_data_or_a_typed_error(tmp_path):
    """Every single-byte flip and every truncation of every file of a small sharded checkpoint
    (index, data files, state file): exact data or a jaxsaver error naming the file."""
    prefix, want = _small_checkpoint(str(tmp_path))
    base = os.path.basename(prefix)
    files = sorted(n for n in os.listdir(tmp_path) if n.startswith(base) and not n.endswith(".meta"))
    figures = {"cases": 0, "exact": 0, "typed": 0}
    bad = []
    for name in files:
        path = str(tmp_path / name)
        with open(path, "rb") as f:
            original = f.read()
        variants = [original[:n] for n in range(len(original))]
        variants += [original[:i] + bytes([original[i] ^ 0xFF]) + original[i + 1 :] for i in range(len(original))]
        for k, data in enumerate(variants):
            with open(path, "wb") as f:
                f.write(data)
            figures["cases"] += 1
            try:
                got = jaxsaver.restore_as_numpy(prefix)
            except jaxsaver.JaxsaverError as err:
                figures["typed"] += 1
                if base not in str(err):
                    bad.append((name, k, f"error does not name the file: {err}"))
                continue
            except Exception as err:  # noqa: BLE001 - what the test is looking for
                bad.append((name, k, f"untyped {type(err).__name__}: {err}"))
                continue
            if _exact(got, want):
                figures["exact"] += 1
            else:
                bad.append((name, k, "wrong values"))
        with open(path, "wb") as f:
            f.write(original)
    # The state file: flipped or cut, latest_checkpoint answers a prefix, None or a typed error.
    state = str(tmp_path / "checkpoint")
    with open(state, "rb") as f:
        original = f.read()
    variants = [original[:n] for n in range(len(original))]
    variants += [original[:i] + bytes([original[i] ^ 0xFF]) + original[i + 1 :] for i in range(len(original))]
    for k, data in enumerate(variants):
        with open(state, "wb") as f:
            f.write(data)
        figures["cases"] += 1
        try:
            latest = jaxsaver.latest_checkpoint(str(tmp_path))
            if latest is not None and not _exact(jaxsaver.restore_as_numpy(latest), want):
                bad.append(("checkpoint", k, "wrong values"))
        except jaxsaver.JaxsaverError as err:
            figures["typed"] += 1
            if "checkpoint" not in str(err) and str(tmp_path) not in str(err):
                bad.append(("checkpoint", k, f"error names no file: {err}"))
        except Exception as err:  # noqa: BLE001
            bad.append(("checkpoint", k, f"untyped {type(err).__name__}: {err}"))
    print(f"\ncorruption sweep: {figures}, files: {files + ['checkpoint']}")
    assert figures["cases"] > 1000
    assert not bad, bad[:5]


@pytest.mark.timeout(1200)
def test_fuzzed_indexes_raise_only_typed_errors_inside_a_memory_bound(tmp_path):
    """hypothesis-generated index/data bytes, read in a subprocess under RLIMIT_AS
    (JAXSAVER_FUZZ_EXAMPLES sets the count; docs/reliability.md has the 100 000-example run)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, FUZZ, str(tmp_path), str(FUZZ_EXAMPLES)], capture_output=True,
                          text=True, env=env, timeout=1100)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nfuzz: {figures}")
    assert figures["examples"] == FUZZ_EXAMPLES
    assert figures["max_seconds"] < 30


def test_overlap_check_agrees_with_pairwise_and_bounds_its_grid():
    rng = np.random.default_rng(0)
    for _ in range(300):
        shape = (6, 5)
        boxes = []
        for _ in range(rng.integers(1, 6)):
            s0, s1 = rng.integers(0, 6), rng.integers(0, 5)
            boxes.append(((int(s0), int(rng.integers(0, 7 - s0))), (int(s1), int(rng.integers(0, 6 - s1)))))
        pairwise = next(
            ((i, j) for j in range(len(boxes)) for i in range(j) if intersect_resolved(boxes[i], boxes[j])), None
        )
        found = find_overlap(shape, boxes)
        assert (found is None) == (pairwise is None), boxes
        if found is not None:
            assert intersect_resolved(boxes[found[0]], boxes[found[1]]) is not None
    n = 5000  # a diagonal: n * n cells, far over the limit, refused before any allocation
    assert n * n > MAX_GRID_CELLS
    with pytest.raises(TooIrregular):
        find_overlap((n, n), [((i, 1), (i, 1)) for i in range(n)])


def test_a_tensor_of_16384_slices_reads_back(tmp_path):
    """A tensor of 16 384 slices is read (the pairwise check did 134 M comparisons here);
    ``benchmarks/slices_bench.py`` times the issue's 65 536."""
    prefix = str(tmp_path / "many")
    n = 1 << 14
    with jaxsaver.BundleWriter(prefix) as writer:
        for i in range(n):
            writer.add_slice("t", (n,), ((i, 1),), np.array([i], np.int32))
    assert os.path.getsize(prefix + ".index") < 4 << 20
    with jaxsaver.BundleReader(prefix) as reader:
        np.testing.assert_array_equal(reader.get_tensor("t"), np.arange(n, dtype=np.int32))


# ----------------------------------------------------------------------------- hostile inputs


def _files_under(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, n), root)] = f.read()
    return out


def test_an_edited_state_file_never_makes_retention_delete_outside_or_other_files(tmp_path, caplog):
    root = tmp_path
    run = root / "run"
    elsewhere = root / "elsewhere"
    x = root / "x"
    for d in (run, elsewhere, x):
        d.mkdir()
    for d in (elsewhere, x):
        for name in ("model-1.index", "model-1.data-00000-of-00001", "model-1.meta", "notes.index"):
            (d / name).write_bytes(b"user data " + name.encode())
    (run / "notes.index").write_bytes(b"my notes")
    values = {"w": np.ones(4, np.float32)}
    saver = jaxsaver.Saver(template=values, max_to_keep=2)
    for step in (1, 2):
        saver.save(values, str(run / "model"), global_step=step)
    jaxsaver.update_checkpoint_state(
        str(run), str(run / "model-2"),
        [str(elsewhere / "model-1"), "../x/model-1", str(run / "model-*"), str(run / "model-2")],
    )
    outside_before = _files_under(str(elsewhere)) | {f"x/{k}": v for k, v in _files_under(str(x)).items()}
    restarted = jaxsaver.Saver(template=values, max_to_keep=2)
    state = jaxsaver.get_checkpoint_state(str(run))
    restarted.set_last_checkpoints_with_time([(p, 0.0) for p in state.all_model_checkpoint_paths])
    with caplog.at_level(logging.WARNING):
        for step in (3, 4, 5, 6):
            restarted.save(values, str(run / "model"), global_step=step)
    outside_after = _files_under(str(elsewhere)) | {f"x/{k}": v for k, v in _files_under(str(x)).items()}
    assert outside_after == outside_before
    assert (run / "notes.index").read_bytes() == b"my notes"
    assert "not in the directory" in caplog.text
    # TF's rule drops one entry per save: the four listed ones left, and only model-2 was ours.
    assert sorted(p.name for p in run.glob("model-*.index")) == [f"model-{k}.index" for k in (1, 3, 4, 5, 6)]


def test_a_glob_character_in_save_path_deletes_only_its_own_checkpoints(tmp_path):
    other = {"w": np.full(4, 9, np.float32)}
    jaxsaver.Saver(template=other, max_to_keep=5).save(other, str(tmp_path / "modelA"), global_step=1,
                                                        latest_filename="other_state")
    before = _files_under(str(tmp_path))
    values = {"w": np.ones(4, np.float32)}
    saver = jaxsaver.Saver(template=values, max_to_keep=1)
    for step in (1, 2, 3):
        saver.save(values, str(tmp_path / "model?"), global_step=step)
    after = _files_under(str(tmp_path))
    assert {k: v for k, v in after.items() if k.startswith("modelA")} == {
        k: v for k, v in before.items() if k.startswith("modelA")
    }
    assert sorted(p for p in after if p.startswith("model?")) == [
        "model?-3.data-00000-of-00001", "model?-3.index", "model?-3.meta",
    ]


def test_hostile_names_write_nothing_outside_the_directory(tmp_path):
    d = tmp_path / "inside"
    d.mkdir()
    (tmp_path / "sentinel").write_bytes(b"x")
    values = {"a": np.ones(2, np.float32), "b": np.zeros(2, np.int32), "c": np.arange(3, dtype=np.int64)}
    saver = jaxsaver.Saver({"../../evil": values["a"], "a\0b": values["b"], "n" * (1 << 20): values["c"]},
                           template=values)
    prefix = saver.save(values, str(d / "model"))
    restored = jaxsaver.restore_as_numpy(prefix)
    np.testing.assert_array_equal(restored["../../evil"] if "../../evil" in restored else restored[".."][".."]["evil"],
                                  values["a"])
    assert sorted(os.listdir(tmp_path)) == ["inside", "sentinel"]
    with pytest.raises(jaxsaver.InvalidArgumentError, match="NUL"):
        saver.save(values, str(d / "mo\0del"))
    with pytest.raises(jaxsaver.JaxsaverError):
        saver.save(values, str(d / ("p" * (1 << 20))))
    assert sorted(os.listdir(d)) == ["checkpoint", "model.data-00000-of-00001", "model.index", "model.meta"]


def test_the_package_has_no_pickle_eval_or_exec():
    """Code, not prose: docstrings and comments may say "no pickle" (tokens, not a text grep)."""
    import io
    import tokenize

    root = os.path.dirname(jaxsaver.__file__)
    hits = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            if not n.endswith(".py") or n.endswith("_pb2.py"):
                continue
            with open(os.path.join(dirpath, n), encoding="utf-8") as f:
                tokens = [t for t in tokenize.generate_tokens(io.StringIO(f.read()).readline)
                          if t.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.STRING)]
            for i, tok in enumerate(tokens):
                before = tokens[i - 1].string if i else ""
                after = [t.string for t in tokens[i + 1 : i + 3]]
                if tok.type != tokenize.NAME:
                    continue
                if tok.string in ("pickle", "marshal", "dill", "cloudpickle", "shelve"):
                    hits.append(f"{n}:{tok.start[0]}: {tok.line.strip()}")
                elif tok.string in ("eval", "exec", "__import__") and before != "." and after[:1] == ["("]:
                    hits.append(f"{n}:{tok.start[0]}: {tok.line.strip()}")
                elif tok.string == "allow_pickle" and after == ["=", "True"]:
                    hits.append(f"{n}:{tok.start[0]}: {tok.line.strip()}")
    assert not hits, hits

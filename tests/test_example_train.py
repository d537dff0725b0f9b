"""examples/train_mlp.py: killed with SIGKILL mid-run and started again, it ends bit-exactly where
an uninterrupted run ends (parameters, optimizer state, step and every loss)."""

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import jaxsaver

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_mlp.py"
STEPS, SAVE_EVERY, MAX_TO_KEEP, KILL_AT = 120, 10, 3, 45


def load_example():
    spec = importlib.util.spec_from_file_location("train_mlp", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def command(ckpt_dir):
    return [sys.executable, str(EXAMPLE), "--ckpt-dir", str(ckpt_dir), "--steps", str(STEPS),
            "--save-every", str(SAVE_EVERY), "--max-to-keep", str(MAX_TO_KEEP)]


def run_until_killed(ckpt_dir, deadline):
    """Starts the example and SIGKILLs it once it printed step KILL_AT; returns its output lines."""
    proc = subprocess.Popen(command(ckpt_dir), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith(f"step {KILL_AT} ") or time.monotonic() > deadline:
                proc.send_signal(signal.SIGKILL)
                break
        assert proc.wait(timeout=60) == -signal.SIGKILL, lines[-5:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    return lines


def tensors(prefix):
    reader = jaxsaver.CheckpointReader(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_killed_and_resumed_run_equals_an_uninterrupted_run(tmp_path):
    deadline = time.monotonic() + 240
    killed_dir = tmp_path / "killed"
    lines = run_until_killed(killed_dir, deadline)
    assert f"step {KILL_AT}" in " ".join(lines), lines[-5:]
    latest = jaxsaver.latest_checkpoint(str(killed_dir))
    killed_at = int(latest.rsplit("-", 1)[1])
    assert SAVE_EVERY <= killed_at < STEPS  # it died mid-run, after some checkpoints
    assert np.isnan(tensors(latest)["losses"][killed_at:]).all()

    resumed = subprocess.run(command(killed_dir), capture_output=True, text=True, timeout=240,
                             env=os.environ | {"PYTHONUNBUFFERED": "1"})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.startswith(f"resumed {latest} at step {killed_at}\n")
    assert f"step {killed_at + 1} loss" in resumed.stdout and f"step {killed_at} loss" not in resumed.stdout

    # the reference: the same example, never interrupted (in this process: one start-up less)
    reference_dir = tmp_path / "reference"
    load_example().train(str(reference_dir), STEPS, SAVE_EVERY, MAX_TO_KEEP, seed=0)

    final_resumed = tensors(str(killed_dir / f"model-{STEPS}"))
    final_reference = tensors(str(reference_dir / f"model-{STEPS}"))
    assert sorted(final_resumed) == sorted(final_reference)
    assert {"train/step", "train/params/Dense_0/kernel", "train/opt_state/0/mu/Dense_0/kernel", "losses"} <= set(
        final_reference
    )
    for name, value in final_reference.items():
        assert final_resumed[name].dtype == value.dtype, name
        assert final_resumed[name].tobytes() == value.tobytes(), name
    assert not np.isnan(final_reference["losses"]).any()
    # the printed losses of the resumed part match the reference's history
    for line in resumed.stdout.splitlines():
        if line.startswith("step "):
            _, step, _, loss = line.split()
            assert np.float32(loss) == final_reference["losses"][int(step) - 1], line
    # max_to_keep: the resumed run kept only the last checkpoints
    state = jaxsaver.get_checkpoint_state(str(killed_dir))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        f"model-{s}" for s in range(STEPS - SAVE_EVERY * (MAX_TO_KEEP - 1), STEPS + 1, SAVE_EVERY)
    ]
    assert sorted(p.name for p in killed_dir.glob("*.index")) == sorted(
        f"model-{s}.index" for s in range(STEPS - SAVE_EVERY * (MAX_TO_KEEP - 1), STEPS + 1, SAVE_EVERY)
    )

"""The main job: train a small Flax model a few steps, save, list, inspect, restore, compare.

Run with ``python -m jaxsaver.demo [--dir DIRECTORY]``: checkpoints go to DIRECTORY (kept), or to
a temporary directory removed at the end. ``--help`` lists the options.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

from jaxsaver import BundleReader, Saver, latest_checkpoint
from jaxsaver._format import dtypes

# A tqdm bar for saves and restores of 64 MiB or more (this model is far smaller) when tqdm is
# installed (``pip install jaxsaver[progress]``).
_PROGRESS = importlib.util.find_spec("tqdm") is not None


class MLP(nn.Module):
    """A two-layer perceptron for made-up regression data."""

    hidden: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)


def make_state(seed: int) -> train_state.TrainState:
    """A fresh TrainState; ``params`` holds Flax's ``params`` collection itself, so the saved
    names are ``params/Dense_0/kernel`` (not ``params/params/...``)."""
    model = MLP()
    params = model.init(jax.random.key(seed), jnp.zeros((1, 8)))["params"]
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=optax.adam(1e-2))


@jax.jit
def train_step(state: train_state.TrainState, x: jax.Array, y: jax.Array) -> tuple[train_state.TrainState, jax.Array]:
    def loss_fn(params: object) -> jax.Array:
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def _human(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jaxsaver.demo",
        description="Train a small Flax MLP a few steps, save checkpoints, inspect and restore them.",
    )
    parser.add_argument("--dir", metavar="DIRECTORY",
                        help="where to write the checkpoints (kept); default: a temporary directory, removed at the end")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; returns the exit code (``--help`` and argument errors return argparse's)."""
    try:
        args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if args.dir is not None:
        return _run(args.dir)
    directory = tempfile.mkdtemp(prefix="jaxsaver-demo-")
    try:
        return _run(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        print(f"removed {directory} (pass --dir DIRECTORY to keep the checkpoints)")


def _run(directory: str) -> int:
    os.makedirs(directory, exist_ok=True)
    prefix = os.path.join(directory, "model")

    print(f"jaxsaver demo: training a small Flax MLP on made-up data, checkpoints in {directory}")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(64, 8)), dtype=jnp.float32)
    y = jnp.sum(x, axis=1, keepdims=True)
    state = make_state(seed=0)
    saver = Saver(template=state, max_to_keep=2)
    for step in range(1, 7):
        state, loss = train_step(state, x, y)
        if step % 2 == 0:
            path = saver.save(state, prefix, global_step=step, progress=_PROGRESS)
            print(f"  step {step}: loss {float(loss):.4f}, saved {os.path.basename(path)}")

    print("checkpoints kept (max_to_keep=2):")
    for path in saver.last_checkpoints:
        files = sorted(f for f in os.listdir(directory) if f.startswith(os.path.basename(path) + "."))
        print(f"  {os.path.basename(path)}: {', '.join(files)}")

    latest = latest_checkpoint(directory)
    print(f"latest checkpoint: {latest}")
    total = 0
    with BundleReader(latest) as reader:
        for info in reader.infos():
            nbytes = int(np.prod(info.shape, dtype=np.int64)) * reader.dtype(info.name).itemsize
            total += nbytes
            print(f"  {info.name:40s} {dtypes.name_of(info.dtype_code):10s} {str(list(info.shape)):10s} {_human(nbytes)}")
    print(f"  total: {_human(total)}")

    fresh = make_state(seed=1)
    restored = saver.restore(latest, target=fresh, progress=_PROGRESS)
    same = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True)
    )
    if not same:
        print("restored state differs from the trained state", file=sys.stderr)
        return 1
    print("restored into a freshly initialised TrainState: every leaf equal to the trained state")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

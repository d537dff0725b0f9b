"""Train a small MLP with Flax and optax, checkpointing every N steps; rerun it to resume.

The data is generated (a fixed random "teacher" network labels Gaussian points into classes), so
the example needs nothing beyond jaxsaver's own dependencies and optax. Everything a step uses is
a function of the step number (the batch, the dropout key), and the checkpoint holds the whole
``TrainState`` plus the loss history, so a run that is killed and started again from its latest
checkpoint ends with exactly the same parameters and losses as one that never stopped::

    python examples/train_mlp.py --ckpt-dir /tmp/mlp --steps 400 --save-every 20
    # kill it at any moment (even with SIGKILL), run the same command again: it resumes

Each step prints ``step <n> loss <value>``; each checkpoint ``saved <prefix>``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

import jaxsaver

NUM_EXAMPLES, NUM_FEATURES, NUM_CLASSES, BATCH = 1024, 16, 4, 64


class MLP(nn.Module):
    """Two hidden layers with dropout."""

    hidden: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.Dropout(0.1, deterministic=not train)(x)
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(NUM_CLASSES)(x)


def make_data(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian inputs labelled by a fixed random linear-tanh teacher (the same for a seed)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((NUM_EXAMPLES, NUM_FEATURES)).astype(np.float32)
    w1 = rng.standard_normal((NUM_FEATURES, 32)).astype(np.float32)
    w2 = rng.standard_normal((32, NUM_CLASSES)).astype(np.float32)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=-1).astype(np.int32)
    return x, y


def make_state(seed: int, steps: int) -> dict[str, Any]:
    """A fresh checkpointable state: the TrainState and the loss history (NaN = not run yet)."""
    model = MLP()
    params = model.init(jax.random.key(seed), jnp.zeros((1, NUM_FEATURES)), train=False)["params"]
    tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 3e-3, 20, steps), weight_decay=1e-4)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    return {"train": state, "losses": np.full((steps,), np.nan, np.float32)}


@jax.jit
def train_step(state: train_state.TrainState, x: jax.Array, y: jax.Array, base_key: jax.Array) -> tuple[Any, jax.Array]:
    """One adamw step on a batch (dropout keyed by the step number); returns the new state and loss."""
    key = jax.random.fold_in(base_key, state.step)

    def loss_fn(params: Any) -> jax.Array:
        logits = state.apply_fn({"params": params}, x, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def train(ckpt_dir: str, steps: int, save_every: int, max_to_keep: int, seed: int) -> dict[str, Any]:
    """Trains to ``steps``, resuming from the latest checkpoint in ``ckpt_dir`` if there is one."""
    x_all, y_all = make_data(seed)
    state = make_state(seed, steps)
    saver = jaxsaver.Saver(state, max_to_keep=max_to_keep)  # the pytree is the template
    latest = jaxsaver.latest_checkpoint(ckpt_dir)
    if latest is not None:
        # The fresh state's step is a Python int; the saved one an int32 array: the scalar rule
        # accepts it (an integer of any width held exactly) and gives back the template's kind.
        state = saver.restore(latest)
        saver.recover_last_checkpoints(jaxsaver.get_checkpoint_state(ckpt_dir).all_model_checkpoint_paths)
        print(f"resumed {latest} at step {int(state['train'].step)}", flush=True)
    base_key = jax.random.key(seed + 1)
    losses = np.array(state["losses"])
    prefix = os.path.join(ckpt_dir, "model")
    for step in range(int(state["train"].step), steps):
        batch = np.random.default_rng([seed, step]).integers(0, NUM_EXAMPLES, BATCH)  # a function of the step
        new_train, loss = train_step(state["train"], x_all[batch], y_all[batch], base_key)
        losses[step] = np.asarray(loss)
        state = {"train": new_train, "losses": losses.copy()}
        print(f"step {step + 1} loss {float(loss):.9g}", flush=True)
        if (step + 1) % save_every == 0 or step + 1 == steps:
            saved = saver.save(state, prefix, global_step=step + 1)
            print(f"saved {saved}", flush=True)
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--save-every", type=int, default=20)
    parser.add_argument("--max-to-keep", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    state = train(args.ckpt_dir, args.steps, args.save_every, args.max_to_keep, args.seed)
    print(f"done: final loss {float(state['losses'][-1]):.9g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A Flax MLP trained with optax: the model code a fresh process must not need (test_meta_graph)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state


class MLP(nn.Module):
    """Two dense layers."""

    hidden: int = 16

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(1)(x)


MODEL = MLP()


def make_state(seed: int = 0) -> train_state.TrainState:
    params = MODEL.init(jax.random.key(seed), jnp.ones((1, 3)))["params"]
    return train_state.TrainState.create(apply_fn=MODEL.apply, params=params, tx=optax.adam(1e-2))


def batches(count: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        x = rng.normal(size=(8, 3)).astype(np.float32)
        out.append((x, (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)))
    return out


@jax.jit
def train_step(state: train_state.TrainState, batch: tuple) -> tuple[train_state.TrainState, jax.Array]:
    x, y = batch

    def loss_fn(params: dict) -> jax.Array:
        return jnp.mean((state.apply_fn({"params": params}, x) - y) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


@jax.jit
def predict(params: dict, x: jax.Array) -> jax.Array:
    return MODEL.apply({"params": params}, x)

"""A training-like process for the crash harness: saves in a loop until killed.

Run as ``python reliability_child.py ROOT SEED_BASE MODE`` with MODE ``loop`` (save until
killed) or ``once`` (one round of saves, then exit cleanly). Every round saves, over 8 devices:
a new step (``ROOT/steps/model-N``, sync and async in turn, ``max_to_keep=2``), and overwrites
of one prefix, sharded (``ROOT/ow8/model``) and unsharded (``ROOT/ow1/model``). Each checkpoint
holds its own ``seed``, from which :func:`expected` rebuilds every value, so a checker can tell
bit-exact data from any mix of two saves. On start it recovers its savers' lists from the state
files, as a restarted trainer does. Prints ``ready`` once set up (before its first save).
"""

from __future__ import annotations

import os
import sys

import numpy as np

SHAPE = (64, 4096)  # 1 MiB of float32, split over 8 devices


def expected(seed: int, shape: tuple[int, int] = SHAPE) -> dict[str, np.ndarray]:
    """The values of the checkpoint with ``seed``, as numpy arrays."""
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal(shape, dtype=np.float32),
        "b": rng.integers(0, 1 << 30, size=(4096,), dtype=np.int32),
        "seed": np.int64(seed),
    }


def matches(restored: dict, seed_key: str = "seed") -> bool:
    """Whether a restored checkpoint (``restore_as_numpy``) is exactly what its seed says."""
    want = expected(int(restored[seed_key]), tuple(np.asarray(restored["w"]).shape))
    return all(
        np.asarray(restored[k]).dtype == want[k].dtype and np.asarray(restored[k]).tobytes() == want[k].tobytes()
        for k in want
    )


def main(root: str, seed_base: int, mode: str) -> None:
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    import jaxsaver

    mesh = Mesh(np.array(jax.devices()), ("x",))
    sharding = NamedSharding(mesh, PartitionSpec("x"))

    def values(seed: int) -> dict:
        v = expected(seed)
        return {"w": jax.device_put(v["w"], sharding), "b": v["b"], "seed": v["seed"]}

    template = values(0)
    savers = {
        "steps": jaxsaver.Saver(template=template, sharded=True, max_to_keep=2),
        "ow8": jaxsaver.Saver(template=template, sharded=True, max_to_keep=2),
        "ow1": jaxsaver.Saver(template=template, sharded=False, max_to_keep=2),
    }
    for name, saver in savers.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        state = jaxsaver.get_checkpoint_state(os.path.join(root, name))
        if state is not None:
            saver.recover_last_checkpoints(list(state.all_model_checkpoint_paths))
    print("ready", flush=True)
    seed = seed_base
    while True:
        seed += 1
        savers["steps"].save(values(seed), os.path.join(root, "steps", "model"), global_step=seed,
                             blocking=seed % 2 == 0)
        seed += 1
        savers["ow8"].save(values(seed), os.path.join(root, "ow8", "model"))
        seed += 1
        savers["ow1"].save(values(seed), os.path.join(root, "ow1", "model"))
        if mode == "once":
            break
    for saver in savers.values():
        saver.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])

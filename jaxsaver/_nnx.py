"""``flax.nnx`` in one call: split a module (or several), restore its state, merge it back.

Example:
    >>> import os, tempfile
    >>> from flax import nnx
    >>> model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    >>> prefix = save_nnx(model, os.path.join(tempfile.mkdtemp(), "model"))
    >>> other = nnx.Linear(2, 3, rngs=nnx.Rngs(1))
    >>> _ = restore_nnx(prefix, other)
    >>> bool((other.kernel[...] == model.kernel[...]).all())
    True
"""

from __future__ import annotations

import logging
from typing import Any

from jaxsaver.saver import Saver

__all__ = ["restore_nnx", "save_nnx"]

logger = logging.getLogger(__name__)


def _nnx() -> Any:
    from flax import nnx  # flax is a runtime dependency; imported here to keep `import jaxsaver` light

    return nnx


def save_nnx(node: Any, save_path: Any, *, saver: Saver | None = None, **save_kwargs: Any) -> Any:
    """Saves the state of an nnx module (or a pytree of modules, e.g. ``{"model": m, "opt": o}``).

    Args:
        node: an ``nnx`` graph node, or a dict / tuple of them (``nnx.state`` accepts both).
        save_path: the checkpoint prefix, as for :meth:`Saver.save`.
        saver: the saver to use; by default a new ``Saver(nnx.state(node))``.
        **save_kwargs: passed to :meth:`Saver.save` (``global_step=...``, ``blocking=False``, ...).

    Returns:
        What :meth:`Saver.save` returns (the checkpoint prefix).
    """
    state = _nnx().state(node)
    saver = saver if saver is not None else Saver(state)
    return saver.save(state, save_path, **save_kwargs)


def restore_nnx(save_path: Any, node: Any, *, saver: Saver | None = None) -> Any:
    """Restores a checkpoint into an nnx module in place: ``nnx.split``, restore, ``nnx.update``.

    The module's own state is the restore target, so its dtypes, shapes and shardings are what
    come back (a sharded model is restored shard by shard onto its devices).

    Args:
        save_path: a checkpoint prefix or a directory (its latest checkpoint).
        node: an ``nnx`` graph node, or a dict / tuple of them, shaped like what was saved.
        saver: the saver to restore with (e.g. one with ``reshape=True``); by default
            ``Saver(state)`` over the node's state.

    Returns:
        ``node``, updated in place.

    Raises:
        NotFoundError: names of the module are missing in the checkpoint (all listed).
        InvalidArgumentError: shapes or dtypes differ (all listed).
    """
    nnx = _nnx()
    _, state = nnx.split(node)
    saver = saver if saver is not None else Saver(state)
    restored = saver.restore(save_path, target=state)
    nnx.update(node, restored)
    logger.info("Restored %s into %s", save_path, type(node).__name__)
    return node

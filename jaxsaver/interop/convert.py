"""Converts orbax checkpoints to TensorFlow V2 bundles (block by block) and bundles to orbax.

:func:`from_orbax` writes each array leaf of an orbax checkpoint under its key path joined by
``/``; an array orbax wrote in several blocks (a sharded ``jax.Array``: one block per shard) is
written as a partitioned tensor, one slice per block, read and written one block at a time, so
no array is ever gathered whole in memory. :func:`to_orbax` needs orbax installed.

Example:
    >>> from jaxsaver.interop.convert import from_orbax
    >>> from_orbax("orbax_ckpt/10/default", "tf_ckpt/model-10")  # doctest: +SKIP
    'tf_ckpt/model-10'
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from jaxsaver import _pipeline
from jaxsaver._bundle.writer import BundleWriter
from jaxsaver._errors import FailedPreconditionError, UnimplementedError
from jaxsaver.interop._orbax_layout import ARRAY_TYPES, EMPTY_TYPES
from jaxsaver.interop.orbax import OrbaxCheckpoint
from jaxsaver.typing import PathLike

__all__ = ["from_orbax", "to_orbax"]

logger = logging.getLogger(__name__)


def from_orbax(orbax_dir: PathLike, prefix: PathLike) -> str:
    """Writes an orbax checkpoint as a bundle at ``prefix``; returns the prefix.

    Array leaves keep their dtype, shape and bits; scalars become 0-d tensors; strings DT_STRING
    scalars. Empty nodes (``None``, ``{}``, ``[]``) hold no tensor and are listed in the log.
    TensorFlow reassembles partitioned tensors of most dtypes, but not of float16, uint16/32/64
    or float8 (FORMAT.md §5): jaxsaver reads those whole or by slice.

    Raises:
        CheckpointNotFoundError: no orbax checkpoint at ``orbax_dir``.
        UnimplementedError: a leaf type jaxsaver does not read.
        InvalidArgumentError: ``prefix`` names a directory or its parent cannot be made.
    """
    checkpoint = OrbaxCheckpoint(orbax_dir)
    location = _pipeline.locate_for_save(prefix)
    _pipeline.make_parent(location)
    empty = []
    with BundleWriter(location.key, storage=location.store) as writer:
        for leaf in checkpoint.leaves:
            if leaf.value_type in EMPTY_TYPES:
                empty.append(leaf.name)
                continue
            if leaf.value_type not in ARRAY_TYPES:
                writer.add(leaf.name, checkpoint.read_leaf(leaf))  # strings (others raise there)
                continue
            shape = checkpoint.shape(leaf)
            if 0 in shape or checkpoint.block_shape(leaf) == shape:  # one block: written whole
                writer.add(leaf.name, checkpoint.read_leaf(leaf))
                continue
            for index, block in checkpoint.blocks(leaf):
                writer.add_slice(leaf.name, shape, index, block)
    # leaving the block committed the index (written last); an error aborted the bundle
    if empty:
        logger.info("Empty nodes of %s hold no tensor: %s", checkpoint.path, ", ".join(empty))
    return location.path


def to_orbax(prefix: PathLike, orbax_dir: PathLike) -> str:
    """Writes a bundle (a prefix or a directory) as an orbax PyTree checkpoint; needs orbax.

    The tree nests names on ``/`` as :func:`jaxsaver.restore_as_numpy` does; scalar strings
    become ``str`` leaves.

    Raises:
        FailedPreconditionError: orbax is not installed.
        UnimplementedError: a string tensor that is not a scalar (orbax stores only ``str``).
    """
    try:
        import orbax.checkpoint as ocp
    except ImportError:
        raise FailedPreconditionError(
            "jaxsaver convert --to-orbax needs orbax: pip install orbax-checkpoint"
        ) from None
    from jaxsaver.saver import restore_as_numpy

    tree = restore_as_numpy(prefix)

    def leaf(path: tuple, value: Any) -> Any:
        array = np.asarray(value)
        if array.dtype.kind in "OSU":
            if array.shape != ():
                raise UnimplementedError(
                    f"{'/'.join(str(getattr(k, 'key', k)) for k in path)}: a string tensor of shape "
                    f"{list(array.shape)}; orbax stores only scalar strings"
                )
            item = array.item()
            return item.decode("utf-8", "surrogateescape") if isinstance(item, bytes) else str(item)
        return array

    import jax

    tree = jax.tree_util.tree_map_with_path(leaf, tree)
    target = os.path.abspath(os.fspath(orbax_dir))
    ocp.PyTreeCheckpointer().save(target, tree)  # synchronous: committed on return
    return target

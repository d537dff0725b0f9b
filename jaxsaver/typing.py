"""Type aliases used in jaxsaver's public signatures.

Example:
    >>> from jaxsaver.typing import PathLike, PyTree
    >>> def latest(directory: PathLike) -> PyTree: ...
"""

from __future__ import annotations

import os
from typing import Any, TypeAlias

__all__ = ["PathLike", "PyTree", "StepLike"]

#: A checkpoint location: a local path (``str`` or ``os.PathLike``) or a URL string
#: (``s3://bucket/dir/model``, ``gs://…``, ``memory://…``).
PathLike: TypeAlias = str | os.PathLike[str]

#: Any JAX pytree: nested dicts, lists, tuples, dataclasses, Flax ``TrainState``, ``nnx.State``,
#: optax states..., whose leaves are ``jax.Array``, numpy arrays, Python/numpy scalars, PRNG key
#: arrays, strings or ``jax.ShapeDtypeStruct`` (as a template or restore target). Pytrees have no
#: static type in JAX, so this is ``Any`` under a name that says what is meant.
PyTree: TypeAlias = Any

#: A global step: a Python or numpy integer, or a scalar integer array.
StepLike: TypeAlias = Any

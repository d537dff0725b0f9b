"""The scalar rule: a Python-number or weak-typed template leaf accepts any stored dtype of its kind.

``TrainState.create`` holds ``step=0`` as a Python int (stored as int64); after a jitted step it
is a weak-typed int32 array. Either kind of template restores either kind of checkpoint: a
template leaf that is a Python ``int`` / ``float`` or a weak-typed jax array stands for "a number
of this kind", so restore accepts any stored integer (resp. floating) dtype whose values the
template's dtype holds exactly, and returns the template's type. Every other leaf keeps the
strict dtype check.

Example:
    >>> import numpy as np
    >>> from jaxsaver.saveables import saveables_from_pytree
    >>> [step] = saveables_from_pytree({"step": 0})
    >>> accepts(step, np.dtype("int32")), accepts(step, np.dtype("float32"))
    (True, False)
    >>> convert_exact("step", np.array(7, np.int32), step.dtype)
    array(7)
"""

from __future__ import annotations

import jax
import numpy as np

from jaxsaver._errors import InvalidArgumentError
from jaxsaver.saveables import LeafKind, Saveable

__all__ = ["number_kind", "accepts", "convert_exact"]


def _category(dtype: np.dtype) -> str | None:
    """``"i"`` for integer dtypes, ``"f"`` for floating ones (bfloat16 & co. included)."""
    if dtype == np.bool_:
        return None
    if jax.dtypes.issubdtype(dtype, np.integer):
        return "i"
    if jax.dtypes.issubdtype(dtype, np.floating):
        return "f"
    return None


def number_kind(saveable: Saveable) -> str | None:
    """``"i"`` / ``"f"`` if the saveable's template leaf stands for a number of that kind, else None."""
    if saveable.kind is LeafKind.INT:
        return "i"
    if saveable.kind is LeafKind.FLOAT:
        return "f"
    if saveable.kind is LeafKind.JAX_ARRAY and saveable.weak_type:
        return _category(saveable.dtype)
    return None


def accepts(saveable: Saveable, stored: np.dtype) -> bool:
    """Whether a tensor stored as ``stored`` may restore into ``saveable`` (same dtype, or the rule)."""
    if np.dtype(stored) == saveable.dtype:
        return True
    kind = number_kind(saveable)
    return kind is not None and _category(np.dtype(stored)) == kind


def convert_exact(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` as ``dtype``, or an error if some value would change.

    Raises:
        InvalidArgumentError: a value is out of ``dtype``'s range or not representable exactly.
    """
    array = np.asarray(array)
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    if _category(dtype) == "i":
        info = np.iinfo(dtype)
        if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
            bad = array[(array < info.min) | (array > info.max)].reshape(-1)[0]
            raise InvalidArgumentError(
                f"{name}: the checkpoint's {array.dtype} value {bad} does not fit in the template's "
                f"{dtype} (a Python-number or weak-typed template leaf takes any integer dtype "
                "whose values it holds exactly)"
            )
        return array.astype(dtype)
    out = array.astype(dtype)
    same = out.astype(array.dtype) == array
    same |= np.isnan(array.astype(np.float64)) & np.isnan(out.astype(np.float64))
    if not bool(np.all(same)):
        bad = array[~same].reshape(-1)[0]
        raise InvalidArgumentError(
            f"{name}: the checkpoint's {array.dtype} value {bad} is not exactly representable in "
            f"the template's {dtype} (a Python-number or weak-typed template leaf takes any floating "
            "dtype whose values it holds exactly)"
        )
    return out

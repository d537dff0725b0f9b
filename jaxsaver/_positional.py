"""How ``Saver``'s positional argument is read: TensorFlow's ``var_list`` or the template pytree.

The rule (see ``docs/decisions.md``):

* With ``template=`` given, the positional argument is always a ``var_list`` with TF's meanings:
  a dict renames (``{checkpoint_name: leaf_or_subtree}``), a list/tuple selects leaves.
* Without a template, a plain ``dict``, ``list`` or ``tuple`` (exactly those types) whose every
  value is a single leaf keeps TF's ``var_list`` meaning; for such a dict the checkpoint names
  are its keys, exactly the names the same dict would get as a template.
* Anything else is the template: a ``TrainState``, ``nnx.State``, ``flax.struct`` dataclass, an
  optax state (a NamedTuple), or a dict / list holding subtrees.

Example:
    >>> import numpy as np
    >>> split_positional({"w": np.zeros(2)}, None)[1] is None     # dict of leaves: a var_list
    True
    >>> var_list, template = split_positional({"params": {"w": np.zeros(2)}}, None)
    >>> var_list is None and sorted(template)                      # a nested dict: the template
    ['params']
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import jax

from jaxsaver._errors import InvalidArgumentError

__all__ = ["split_positional"]


def _is_one_leaf(value: Any) -> bool:
    """Whether ``value`` is a single pytree leaf (an ``nnx.Variable`` counts as one)."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(value, getattr(nnx, "Variable", ())):
        return True
    leaves = jax.tree_util.tree_leaves(value)
    return len(leaves) == 1 and leaves[0] is value


def split_positional(positional: Any, template: Any) -> tuple[Any, Any]:
    """Returns ``(var_list, template)`` for ``Saver(positional, template=template)``.

    Args:
        positional: ``Saver``'s first argument.
        template: ``Saver``'s ``template=`` keyword.

    Returns:
        The ``var_list`` (None when the positional argument is the template) and the template.

    Raises:
        InvalidArgumentError: ``template`` is given and ``positional`` is neither None, a dict
            nor a list/tuple.
    """
    if positional is None:
        return None, template
    plain = type(positional) in (dict, list, tuple)
    if template is not None:
        if isinstance(positional, Mapping) or type(positional) in (list, tuple):
            return positional, template
        raise InvalidArgumentError(
            f"var_list must be None, a dict or a list/tuple, got {type(positional).__name__}; "
            f"a {type(positional).__name__} passed positionally is the template itself, so pass "
            "it without template=..."
        )
    values = positional.values() if isinstance(positional, dict) else positional
    if plain and all(_is_one_leaf(v) for v in values):
        return positional, None
    return None, positional

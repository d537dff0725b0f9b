"""Checkpoint names of pytree leaves: key paths joined by ``/``, flax.nnx Variables looked through.

Example:
    >>> [(name, leaf) for name, _, leaf in named_leaves({"params": {"w": 1.0}, "step": [2]})]
    [('params/w', 1.0), ('step/0', 2)]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax

from jaxsaver._errors import InvalidArgumentError

__all__ = ["check_unique", "key_path_to_name", "named_leaves", "select_by_identity"]


def key_path_to_name(path: Sequence[Any]) -> str:
    """Joins a jax key path into a checkpoint name.

    ``DictKey`` gives ``str(key)``, ``SequenceKey`` / ``FlattenedIndexKey`` the decimal index and
    ``GetAttrKey`` the attribute name; components are joined with ``"/"`` and kept verbatim (a
    key that itself contains ``"/"`` is legal).

    Args:
        path: A key path from ``jax.tree_util.tree_flatten_with_path``.

    Returns:
        The checkpoint name.

    Raises:
        InvalidArgumentError: The path is empty (a bare leaf) or has an empty component.

    Example:
        >>> from jax.tree_util import DictKey, SequenceKey, GetAttrKey
        >>> key_path_to_name((GetAttrKey("opt_state"), SequenceKey(0), GetAttrKey("mu"), DictKey("w")))
        'opt_state/0/mu/w'
    """
    if not path:
        raise InvalidArgumentError(
            "Cannot name a bare leaf (the whole tree is one leaf, so its key path is empty): "
            'wrap it in a dict, e.g. {"name": leaf}, or pass var_list={"name": leaf}.'
        )
    parts = []
    for entry in path:
        part = _key_entry_name(entry)
        if not part:
            raise InvalidArgumentError(
                f"Empty name component in key path {jax.tree_util.keystr(tuple(path))}: "
                "every dict key / attribute on the way to a leaf must be a non-empty name."
            )
        parts.append(part)
    return "/".join(parts)


def _key_entry_name(entry: Any) -> str:
    """The name component of one key-path entry."""
    tu = jax.tree_util
    if isinstance(entry, tu.DictKey):
        return str(entry.key)
    if isinstance(entry, tu.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, tu.GetAttrKey):
        return entry.name
    if isinstance(entry, tu.FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def _nnx_variable_types() -> tuple[type, ...]:
    """``flax.nnx`` Variable classes if flax.nnx is already imported (never imports flax)."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is None:
        return ()
    return tuple(
        {t for t in (getattr(nnx, "Variable", None), getattr(nnx, "VariableState", None)) if isinstance(t, type)}
    )


def named_leaves(tree: Any) -> Iterator[tuple[str, tuple, Any]]:
    """Yields ``(name, key_path, leaf)`` for every leaf of ``tree`` in flatten order.

    ``flax.nnx`` Variables flatten as a node with a single ``.value`` child; that trailing
    ``value`` component is dropped from the name (but kept in the key path) so names read
    ``linear/kernel``. The leaf order equals ``jax.tree_util.tree_leaves(tree)``.
    """
    var_types = _nnx_variable_types()
    is_leaf: Callable[[Any], bool] | None = (lambda x: isinstance(x, var_types)) if var_types else None
    for path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]:
        if var_types and isinstance(node, var_types):
            for sub_path, leaf in jax.tree_util.tree_flatten_with_path(node)[0]:
                name_path = sub_path
                if sub_path and isinstance(sub_path[0], jax.tree_util.GetAttrKey) and sub_path[0].name == "value":
                    name_path = sub_path[1:]
                yield key_path_to_name(path + name_path), path + sub_path, leaf
        else:
            yield key_path_to_name(path), path, node


def select_by_identity(tree: Any, elements: Sequence[Any]) -> list[tuple[str, tuple, Any]]:
    """The named leaves of ``tree`` that are (by identity) leaves of some element of ``elements``."""
    wanted = {id(leaf) for leaf in jax.tree_util.tree_leaves(list(elements))}
    named = list(named_leaves(tree))
    present = {id(leaf) for _, _, leaf in named}
    missing = [
        str(index)
        for index, element in enumerate(elements)
        if any(id(leaf) not in present for leaf in jax.tree_util.tree_leaves(element))
    ]
    if missing:
        raise InvalidArgumentError(
            f"var_list element(s) at index {', '.join(missing)} are not (or not entirely) leaves "
            "of the tree; pass leaves or subtrees of the tree itself, or a dict {name: value}."
        )
    return [(name, path, leaf) for name, path, leaf in named if id(leaf) in wanted]


def check_unique(entries: Sequence[tuple[str, tuple, Any]]) -> None:
    """Raises ``InvalidArgumentError`` (a ``ValueError``, TF's text) if two entries share a name."""
    seen: dict[str, tuple] = {}
    for name, path, _ in entries:
        if name in seen:
            raise InvalidArgumentError(
                f"At least two variables have the same name: {name} "
                f"(key paths {jax.tree_util.keystr(seen[name])} and {jax.tree_util.keystr(path)})"
            )
        seen[name] = path

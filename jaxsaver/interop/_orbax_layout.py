"""The layout of an orbax PyTree checkpoint as pure data: its ``_METADATA`` parsed, its tree rebuilt.

An orbax ``StandardCheckpointer`` / ``PyTreeCheckpointer`` item directory holds ``_METADATA``
(JSON: per leaf its key path with key types, its value type and the shape it was written in;
``use_ocdbt``, ``use_zarr3``), ``_CHECKPOINT_METADATA`` (timestamps), the arrays in one OCDBT
database (``manifest.ocdbt``, ``d/``, ``ocdbt.process_<k>/``) or one directory per leaf, each a
zarr (v2) or zarr3 array named by the leaf's keys joined with ``.``, and ``_strings.json`` for
string leaves. This module only parses; :mod:`jaxsaver.interop.orbax` reads.

Example:
    >>> layout = parse_metadata(b'{"tree_metadata": {"(\\'w\\',)": {"key_metadata": '
    ...     b'[{"key": "w", "key_type": 2}], "value_metadata": {"value_type": "np.ndarray"}}}, '
    ...     b'"use_ocdbt": true, "use_zarr3": false}')
    >>> [(leaf.name, leaf.param_name, leaf.value_type) for leaf in layout.leaves]
    [('w', 'w', 'np.ndarray')]
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jaxsaver._errors import DataLossError, UnimplementedError

__all__ = ["ARRAY_TYPES", "EMPTY_TYPES", "OrbaxLeaf", "OrbaxLayout", "parse_metadata", "build_tree", "check_readable"]

#: Value types stored as zarr arrays.
ARRAY_TYPES = ("jax.Array", "np.ndarray", "scalar")
#: Value types of empty nodes (nothing stored), and what they read back as.
EMPTY_TYPES: Mapping[str, Any] = {"None": None, "Dict": {}, "List": [], "Tuple": ()}
_SEQUENCE, _DICT = 1, 2


@dataclass(frozen=True, slots=True, kw_only=True)
class OrbaxLeaf:
    """One leaf of an orbax checkpoint's tree."""

    keys: tuple[str | int, ...]
    """Its key path: dict keys as ``str``, sequence indices as ``int``."""
    value_type: str
    """orbax's type name: ``jax.Array``, ``np.ndarray``, ``scalar``, ``string`` or an empty node."""
    write_shape: tuple[int, ...] | None = None
    """The block shape each process wrote (a ``jax.Array``'s shard), when recorded."""

    @property
    def name(self) -> str:
        """The checkpoint name jaxsaver gives it: keys joined by ``/`` (as for a pytree leaf)."""
        return "/".join(str(k) for k in self.keys)

    @property
    def param_name(self) -> str:
        """orbax's name for it: keys joined by ``.``, the array's directory in the checkpoint."""
        return ".".join(str(k) for k in self.keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class OrbaxLayout:
    """An orbax item's ``_METADATA``."""

    leaves: tuple[OrbaxLeaf, ...]
    """Every leaf, in the file's order."""
    use_ocdbt: bool
    """Arrays live in one OCDBT database rather than one directory each."""
    use_zarr3: bool
    """Arrays are zarr3 (``zarr.json``) rather than zarr v2 (``.zarray``)."""
    all_chunks_stored: bool
    """Every chunk was written, even one equal to the fill value (a missing one is data loss)."""


def _fail(message: str) -> None:
    raise DataLossError(f"orbax _METADATA: {message}")


def parse_metadata(data: bytes) -> OrbaxLayout:
    """Parses an orbax ``_METADATA`` file.

    Raises:
        DataLossError: it is not JSON of the expected shape.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataLossError(f"orbax _METADATA is not JSON: {err}") from None
    tree = doc.get("tree_metadata") if isinstance(doc, dict) else None
    if not isinstance(tree, dict):
        _fail("no 'tree_metadata' object")
    leaves = []
    for label, entry in tree.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("key_metadata"), list):
            _fail(f"leaf {label}: no 'key_metadata' list")
        keys: list[str | int] = []
        for part in entry["key_metadata"]:
            key = part.get("key") if isinstance(part, dict) else None
            kind = part.get("key_type") if isinstance(part, dict) else None
            if kind == _SEQUENCE and isinstance(key, (str, int)) and str(key).isdigit():
                keys.append(int(key))
            elif kind == _DICT and isinstance(key, (str, int)):
                keys.append(str(key))
            else:
                _fail(f"leaf {label}: unreadable key entry {part!r}")
        if not keys:
            _fail(f"leaf {label}: empty key path")
        value = entry.get("value_metadata") or {}
        value_type = value.get("value_type") if isinstance(value, dict) else None
        if not isinstance(value_type, str):
            _fail(f"leaf {label}: no value_type")
        shape = value.get("write_shape")
        if shape is not None and not (isinstance(shape, list) and all(isinstance(d, int) and d > 0 for d in shape)):
            _fail(f"leaf {label}: bad write_shape {shape!r}")
        leaves.append(OrbaxLeaf(keys=tuple(keys), value_type=value_type,
                                write_shape=None if shape is None else tuple(shape)))
    return OrbaxLayout(
        leaves=tuple(leaves),
        use_ocdbt=bool(doc.get("use_ocdbt", False)),
        use_zarr3=bool(doc.get("use_zarr3", False)),
        all_chunks_stored=bool(doc.get("store_array_data_equal_to_fill_value", False)),
    )


def build_tree(leaves: Sequence[OrbaxLeaf], values: Sequence[Any]) -> Any:
    """Nests ``values`` by the leaves' key paths: dicts for dict keys, lists for indices.

    Raises:
        DataLossError: a node is both a dict and a list, both a leaf and a node, or a list
            misses an index.

    Example:
        >>> leaves = [OrbaxLeaf(keys=("a", 0), value_type="scalar"), OrbaxLeaf(keys=("a", 1), value_type="scalar")]
        >>> build_tree(leaves, [1, 2])
        {'a': [1, 2]}
    """
    root: dict[Any, Any] = {}
    kinds: dict[tuple, int] = {}
    leaf_paths: set[tuple] = set()
    for leaf, value in zip(leaves, values):
        keys = leaf.keys
        if keys in leaf_paths or keys in kinds or any(keys[:d] in leaf_paths for d in range(1, len(keys))):
            _fail(f"{leaf.name}: listed twice, or both a leaf and a node")
        leaf_paths.add(keys)
        node = root
        for depth, key in enumerate(keys):
            kind = _SEQUENCE if isinstance(key, int) else _DICT
            prefix = keys[:depth]
            if kinds.setdefault(prefix, kind) != kind:
                _fail(f"{leaf.name}: the node at {'/'.join(map(str, prefix)) or 'the root'} is both a list and a dict")
            if depth == len(keys) - 1:
                node[key] = value
            else:
                node = node.setdefault(key, {})
    return _listify(root, (), kinds)


def _listify(node: Any, prefix: tuple, kinds: Mapping[tuple, int]) -> Any:
    if not isinstance(node, dict) or prefix not in kinds:
        return node
    items = {k: _listify(v, prefix + (k,), kinds) for k, v in node.items()}
    if kinds[prefix] == _DICT:
        return items
    if sorted(items) != list(range(len(items))):
        _fail(f"the list at {'/'.join(map(str, prefix)) or 'the root'} has indices {sorted(items)}")
    return [items[i] for i in range(len(items))]


def check_readable(leaf: OrbaxLeaf) -> None:
    """Raises for value types this reader does not know."""
    if leaf.value_type not in ARRAY_TYPES and leaf.value_type != "string" and leaf.value_type not in EMPTY_TYPES:
        raise UnimplementedError(
            f"orbax leaf {leaf.name}: value type {leaf.value_type!r} is not read by jaxsaver "
            f"(it reads {', '.join(ARRAY_TYPES)}, string and empty nodes)"
        )

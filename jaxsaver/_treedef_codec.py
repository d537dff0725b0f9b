"""A portable encoding of pytree structures (node kinds, keys, leaf names): no pickle, no imports on read.

A structure is a flat pre-order list of nodes (``PyTreeDef`` in ``meta_graph.proto``). Builtin
containers (``None``, tuple, list, dict with ``str``/``int`` keys) come back as themselves;
namedtuples and other registered nodes (flax ``TrainState``, optax states, ``FrozenDict``,
dataclasses) are recorded with their type name for display but rebuilt as plain dicts of their
fields (tuples when their children are positional), so reading a structure never needs, imports or
runs the classes that wrote it, and every leaf keeps its checkpoint name. ``flax.nnx`` Variables
are recorded as leaves (their one ``value``), as jaxsaver names them.

Example:
    >>> import collections
    >>> Pair = collections.namedtuple("Pair", "a b")
    >>> proto = encode({"x": Pair(a=1, b=[2, None])})
    >>> decode(proto, ["A", "B"])
    {'x': {'a': 'A', 'b': ['B', None]}}
    >>> leaf_names(proto)
    ['x/a', 'x/b/0']
    >>> flatten(proto, {"x": Pair(a=10, b=[20, None])})
    [10, 20]
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from jaxsaver._errors import DataLossError, InvalidArgumentError
from jaxsaver._proto import meta_graph_pb2

__all__ = ["decode", "describe", "encode", "encode_treedef", "flatten", "leaf_names", "num_leaves", "subtree", "wrap"]

_Def = meta_graph_pb2.PyTreeDef
_Kind = _Def.Kind
_MAX_KEY_INT = 2**63


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _nnx_variable_types() -> tuple[type, ...]:
    nnx = sys.modules.get("flax.nnx")  # never imports flax
    if nnx is None:
        return ()
    return tuple(t for t in (getattr(nnx, "Variable", None), getattr(nnx, "VariableState", None)) if isinstance(t, type))


def _key_proto(entry: Any, where: str) -> _Def.Key:
    import jax

    tu = jax.tree_util
    key = _Def.Key()
    if isinstance(entry, tu.DictKey):
        value = entry.key
        if isinstance(value, str):
            key.dict_str = value
        elif isinstance(value, int) and not isinstance(value, bool) and -_MAX_KEY_INT <= value < _MAX_KEY_INT:
            key.dict_int = value
        else:
            raise InvalidArgumentError(
                f"Cannot record the dict key {value!r} at {where or 'the root'}: "
                "only str and int keys have a portable encoding."
            )
    elif isinstance(entry, tu.SequenceKey):
        key.index = entry.idx
    elif isinstance(entry, tu.GetAttrKey):
        key.attr = entry.name
    elif isinstance(entry, tu.FlattenedIndexKey):
        key.flat_index = entry.key
    else:
        raise InvalidArgumentError(f"Cannot record the key path entry {entry!r} at {where or 'the root'}.")
    return key


def _key_text(key: _Def.Key) -> str:
    field = key.WhichOneof("key")
    return "" if field is None else str(getattr(key, field))


def encode(tree: Any) -> meta_graph_pb2.PyTreeDef:
    """The portable structure of ``tree``; its leaves are ``jax.tree_util.tree_leaves(tree)``.

    Raises:
        InvalidArgumentError: a dict key is neither ``str`` nor ``int``, or a node's key paths
            are of a kind with no encoding; the message names the key path.
    """
    import jax  # only writing needs JAX: reading, naming and display are pure

    out = _Def()
    var_types = _nnx_variable_types()
    stack: list[tuple[Any, _Def.Key | None, str]] = [(tree, None, "")]
    while stack:
        node, key, where = stack.pop()
        item = out.nodes.add()
        if key is not None:
            item.key.CopyFrom(key)
        if node is None:
            item.kind = _Kind.NONE
            continue
        if var_types and isinstance(node, var_types):
            item.kind = _Kind.LEAF
            item.type_name = _type_name(type(node))
            continue
        children, treedef = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x, root=node: x is not root)
        if treedef.num_nodes == 1 and treedef.num_leaves == 1:  # a leaf (empty containers have 0)
            item.kind = _Kind.LEAF
            continue
        cls = treedef.node_data()[0]
        if cls is dict:
            item.kind = _Kind.DICT
        elif cls is list:
            item.kind = _Kind.LIST
        elif cls is tuple:
            item.kind = _Kind.TUPLE
        elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
            item.kind = _Kind.NAMEDTUPLE
            item.type_name = _type_name(cls)
        else:
            item.kind = _Kind.CUSTOM
            item.type_name = _type_name(cls)
        item.num_children = len(children)
        for path, child in reversed(children):
            child_where = where + jax.tree_util.keystr(tuple(path))
            stack.append((child, _key_proto(path[0], child_where), child_where))
    return out


def encode_treedef(treedef: Any) -> meta_graph_pb2.PyTreeDef:
    """The portable structure of a ``jax.tree_util.PyTreeDef`` (e.g. ``Exported.in_tree``)."""
    import jax

    placeholders = [object() for _ in range(treedef.num_leaves)]
    return encode(jax.tree_util.tree_unflatten(treedef, placeholders))


def _checked_nodes(proto: meta_graph_pb2.PyTreeDef) -> list[tuple[int, int]]:
    """``(start, end)`` node spans per node, checking the pre-order counts (corrupt → DataLossError)."""
    nodes = proto.nodes
    if not nodes:
        raise DataLossError("Malformed tree structure: no nodes.")
    ends = [0] * len(nodes)
    stack: list[tuple[int, int]] = []  # (node index, children still to come)
    for index, node in enumerate(nodes):
        if node.kind not in _Kind.values():
            raise DataLossError(f"Malformed tree structure: node {index} has unknown kind {node.kind}.")
        count = node.num_children
        if count < 0 or (count and node.kind in (_Kind.LEAF, _Kind.NONE)):
            raise DataLossError(f"Malformed tree structure: node {index} has {count} children.")
        if index and not stack:
            raise DataLossError(f"Malformed tree structure: node {index} is outside the root.")
        stack.append((index, count))
        while stack and stack[-1][1] == 0:
            done, _ = stack.pop()
            ends[done] = index + 1
            if stack:
                parent, left = stack.pop()
                stack.append((parent, left - 1))
    if stack:
        raise DataLossError("Malformed tree structure: it ends before every node has its children.")
    return list(zip(range(len(nodes)), ends))


def _children(proto: meta_graph_pb2.PyTreeDef, spans: list[tuple[int, int]], index: int) -> list[int]:
    out, child, end = [], index + 1, spans[index][1]
    while child < end:
        out.append(child)
        child = spans[child][1]
    return out


def _rebuild(node: _Def.Node, keys: list[_Def.Key], values: list[Any], index: int) -> Any:
    """One container of the decoded tree from its children's values."""
    kind = node.kind
    fields = [k.WhichOneof("key") for k in keys]
    if kind == _Kind.TUPLE or kind == _Kind.LIST:
        if any(f != "index" for f in fields) or [k.index for k in keys] != list(range(len(keys))):
            raise DataLossError(f"Malformed tree structure: node {index} is a sequence with keys {fields}.")
        return tuple(values) if kind == _Kind.TUPLE else list(values)
    if kind == _Kind.DICT and any(f not in ("dict_str", "dict_int") for f in fields):
        raise DataLossError(f"Malformed tree structure: node {index} is a dict with keys {fields}.")
    if kind == _Kind.CUSTOM and fields and all(f in ("index", "flat_index") for f in fields):
        positions = [getattr(k, f) for k, f in zip(keys, fields)]
        if positions == list(range(len(keys))):
            return tuple(values)
        return dict(zip(positions, values))
    if any(f is None for f in fields):
        raise DataLossError(f"Malformed tree structure: a child of node {index} has no key.")
    out = {}
    for key, field, value in zip(keys, fields, values):
        name = getattr(key, field)
        if name in out:
            raise DataLossError(f"Malformed tree structure: node {index} has the key {name!r} twice.")
        out[name] = value
    return out


def decode(proto: meta_graph_pb2.PyTreeDef, leaves: Sequence[Any]) -> Any:
    """Rebuilds the structure with ``leaves`` (in pre-order) as its leaves.

    Raises:
        DataLossError: the structure is malformed or does not have ``len(leaves)`` leaves.
    """
    spans = _checked_nodes(proto)
    count = sum(1 for n in proto.nodes if n.kind == _Kind.LEAF)
    if count != len(leaves):
        raise DataLossError(f"Malformed tree structure: it has {count} leaves, expected {len(leaves)}.")
    nodes = proto.nodes
    values: list[Any] = [None] * len(nodes)
    next_leaf = count
    for index in range(len(nodes) - 1, -1, -1):  # children before parents
        node = nodes[index]
        if node.kind == _Kind.LEAF:
            next_leaf -= 1
            values[index] = leaves[next_leaf]
        elif node.kind == _Kind.NONE:
            values[index] = None
        else:
            kids = _children(proto, spans, index)
            values[index] = _rebuild(node, [nodes[k].key for k in kids], [values[k] for k in kids], index)
            for k in kids:
                values[k] = None
    return values[0]


def num_leaves(proto: meta_graph_pb2.PyTreeDef) -> int:
    """How many leaves the structure has."""
    return sum(1 for n in proto.nodes if n.kind == _Kind.LEAF)


def leaf_names(proto: meta_graph_pb2.PyTreeDef) -> list[str]:
    """Each leaf's name: its keys joined by ``/`` (``""`` for a root that is a leaf)."""
    spans = _checked_nodes(proto)
    names: list[str] = []
    path: list[tuple[int, str]] = []  # (end, text) of the open ancestors
    for index, node in enumerate(proto.nodes):
        while path and path[-1][0] <= index:
            path.pop()
        text = _key_text(node.key) if index else ""
        parts = [t for _, t in path] + ([text] if index else [])
        if node.kind == _Kind.LEAF:
            names.append("/".join(parts))
        if index:
            path.append((spans[index][1], text))
    return names


def _lookup(value: Any, key: _Def.Key) -> tuple[bool, Any]:
    field = key.WhichOneof("key")
    name = getattr(key, field) if field else None
    if field in ("index", "flat_index"):
        if isinstance(value, (tuple, list)) and 0 <= name < len(value):
            return True, value[name]
        if isinstance(value, Mapping) and name in value:
            return True, value[name]
        return False, None
    if isinstance(value, Mapping):
        return (name in value), value.get(name)
    if field == "attr" and hasattr(value, name):
        return True, getattr(value, name)
    return False, None


def flatten(proto: meta_graph_pb2.PyTreeDef, value: Any) -> list[Any]:
    """The leaves of ``value`` in the structure's order, found by key.

    ``value`` may be the decoded form (dicts for custom nodes) or the original objects
    (attributes are read by name).

    Raises:
        InvalidArgumentError: parts of the structure are missing, or there are extra keys; every
            problem is listed with its path.
    """
    spans = _checked_nodes(proto)
    nodes = proto.nodes
    problems: list[str] = []
    leaves: list[Any] = []
    stack: list[tuple[int, Any, str]] = [(0, value, "")]
    while stack:
        index, item, where = stack.pop()
        node = nodes[index]
        if node.kind == _Kind.LEAF:
            leaves.append(item)
            continue
        if node.kind == _Kind.NONE:
            if item is not None:
                problems.append(f"  {where or '(root)'}: expected None, got {type(item).__name__}")
            continue
        kids = _children(proto, spans, index)
        if node.kind in (_Kind.TUPLE, _Kind.LIST) and not isinstance(item, (tuple, list)):
            problems.append(f"  {where or '(root)'}: expected a {'tuple' if node.kind == _Kind.TUPLE else 'list'}, "
                            f"got {type(item).__name__}")
            continue
        if node.kind in (_Kind.TUPLE, _Kind.LIST) and len(item) != len(kids):
            problems.append(f"  {where or '(root)'}: expected {len(kids)} elements, got {len(item)}")
            continue
        if node.kind == _Kind.DICT:
            if not isinstance(item, Mapping):
                problems.append(f"  {where or '(root)'}: expected a dict, got {type(item).__name__}")
                continue
            expected = {getattr(nodes[k].key, nodes[k].key.WhichOneof("key") or "attr") for k in kids}
            extra = [k for k in item if k not in expected]
            if extra:
                problems.append(f"  {where or '(root)'}: unexpected keys {extra}")
        pending = []
        for k in kids:
            found, child = _lookup(item, nodes[k].key)
            child_where = f"{where}/{_key_text(nodes[k].key)}" if where else _key_text(nodes[k].key)
            if not found:
                problems.append(f"  {child_where}: missing")
                continue
            pending.append((k, child, child_where))
        stack.extend(reversed(pending))
    if problems:
        raise InvalidArgumentError("The arguments do not match the recorded structure:\n" + "\n".join(problems))
    return leaves


def subtree(proto: meta_graph_pb2.PyTreeDef, components: Sequence[str]) -> meta_graph_pb2.PyTreeDef:
    """The structure under the node reached by following keys named ``components``.

    Raises:
        InvalidArgumentError: no node has that path.
    """
    spans = _checked_nodes(proto)
    index = 0
    for depth, part in enumerate(components):
        match = [k for k in _children(proto, spans, index) if _key_text(proto.nodes[k].key) == part]
        if len(match) != 1:
            raise InvalidArgumentError(f"The tree has no node {'/'.join(components[: depth + 1])!r}.")
        index = match[0]
    out = _Def()
    for k in range(index, spans[index][1]):
        node = out.nodes.add()
        node.CopyFrom(proto.nodes[k])
    out.nodes[0].ClearField("key")
    return out


def wrap(proto: meta_graph_pb2.PyTreeDef, components: Sequence[str]) -> meta_graph_pb2.PyTreeDef:
    """The structure nested under dicts keyed ``components`` (``{"a": {"b": tree}}``).

    Example:
        >>> describe(wrap(encode([1]), ["a", "b"]))
        "{'a': {'b': [*]}}"
    """
    out = _Def()
    for depth, part in enumerate(components):
        node = out.nodes.add(kind=_Kind.DICT, num_children=1)
        if depth:
            node.key.dict_str = components[depth - 1]
    for index, original in enumerate(proto.nodes):
        node = out.nodes.add()
        node.CopyFrom(original)
        if index == 0 and components:
            node.key.Clear()
            node.key.dict_str = components[-1]
    return out


def describe(proto: meta_graph_pb2.PyTreeDef) -> str:
    """A one-line text of the structure, like ``PyTreeDef``'s (``*`` for leaves).

    Example:
        >>> describe(encode({"a": (1, None), "b": [2.0]}))
        "{'a': (*, None), 'b': [*]}"
    """
    spans = _checked_nodes(proto)
    nodes = proto.nodes

    def text(index: int) -> str:
        node = nodes[index]
        if node.kind == _Kind.LEAF:
            return "*"
        if node.kind == _Kind.NONE:
            return "None"
        kids = _children(proto, spans, index)
        if node.kind in (_Kind.TUPLE, _Kind.LIST):
            inner = ", ".join(text(k) for k in kids)
            if node.kind == _Kind.LIST:
                return f"[{inner}]"
            return f"({inner},)" if len(kids) == 1 else f"({inner})"
        if node.kind == _Kind.DICT:
            return "{" + ", ".join(f"{getattr(nodes[k].key, nodes[k].key.WhichOneof('key'))!r}: {text(k)}"
                                   for k in kids) + "}"
        name = node.type_name.rsplit(".", 1)[-1]
        return f"{name}(" + ", ".join(f"{_key_text(nodes[k].key)}={text(k)}" for k in kids) + ")"

    return text(0)

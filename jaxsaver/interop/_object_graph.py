"""The ``TrackableObjectGraph`` name mapping of TF2 checkpoints: parse, read, rename, build.

The machinery behind :mod:`jaxsaver.interop.tf2` that :class:`jaxsaver.Saver` calls itself (its
restore fallback and ``object_graph=True``); it never imports the Saver.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from jaxsaver._errors import CheckpointNotFoundError, DataLossError, InvalidArgumentError, NotFoundError
from jaxsaver._proto.trackable_object_graph_pb2 import TrackableObjectGraph
from jaxsaver.saveables import Saveable, saveables_from_pytree
from jaxsaver.typing import PathLike


__all__ = [
    "OBJECT_GRAPH_KEY",
    "SAVE_COUNTER_KEY",
    "ObjectGraphNames",
    "parse_object_graph",
    "read_object_graph",
    "object_graph_key_mapping",
    "rename_saveables",
    "object_based_saveables",
    "escape_local_name",
    "object_key",
    "build_object_graph",
    "with_object_graph",
]

logger = logging.getLogger("jaxsaver.interop.tf2")  # the public module users filter on

#: The bundle key holding the serialized ``TrackableObjectGraph`` (a scalar DT_STRING).
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
#: ``tf.train.Checkpoint``'s own variable, which ``assert_consumed()`` expects to find.
SAVE_COUNTER = "save_counter"
SAVE_COUNTER_KEY = "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
_VARIABLE_VALUE = "VARIABLE_VALUE"
_SLOT = ".OPTIMIZER_SLOT"
_MAX_PATH_PARTS = 1 << 22  # path parts spelled while parsing one graph, plus 16 per byte of it


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectGraphNames:
    """The names a TF2 object graph gives its checkpoint keys (pure data)."""

    paths: Mapping[str, str]
    """Object path (local names from the root joined by ``/``) → checkpoint key, for variables."""
    full_names: Mapping[str, str]
    """``full_name`` (the variable's graph name) → checkpoint key, where exactly one key has it."""
    ambiguous: Mapping[str, tuple[str, ...]]
    """``full_name`` → its keys, where several variables share it (eager ``Variable``...)."""
    keys: tuple[str, ...]
    """Every checkpoint key the graph names, in node order."""

    def names_to_keys(self) -> dict[str, str]:
        """One map from every usable name to its key: keys themselves, then paths, then full names.

        Where a name is both a path and another variable's ``full_name``, the path wins.
        """
        out = dict(self.full_names)
        out.update(self.paths)
        out.update({key: key for key in self.keys})
        return out

    def labels(self) -> dict[str, str]:
        """How each key is shown in messages: its path, with its ``full_name`` when it has one."""
        path_of = {key: path for path, key in self.paths.items()}
        full_of = {key: name for name, key in self.full_names.items()}
        out = {}
        for key in self.keys:
            path, full = path_of.get(key, key), full_of.get(key)
            out[key] = f"{path} ({full})" if full and full != path else path
        return out


def parse_object_graph(data: bytes) -> ObjectGraphNames:
    """Parses a serialized ``TrackableObjectGraph`` into its name maps (pure).

    Raises:
        DataLossError: the bytes are not a graph, or a reference points outside it.
    """
    graph = TrackableObjectGraph()
    try:
        graph.ParseFromString(data)
    except DecodeError as err:
        raise DataLossError(f"{OBJECT_GRAPH_KEY} does not hold a TrackableObjectGraph: {err}") from None
    nodes = graph.nodes
    count = len(nodes)

    def check(node_id: int, where: str) -> int:
        if not 0 <= node_id < count:
            raise DataLossError(f"{OBJECT_GRAPH_KEY}: {where} refers to node {node_id}; the graph has {count}")
        return node_id

    # Parent links only (memory linear in the graph); paths are spelled for variables alone, and
    # their total length is capped so a hostile graph (a deep chain of variables) cannot make
    # this quadratic.
    link: dict[int, tuple[int, str]] = {}
    reached = {0} if count else set()
    queue = collections.deque(reached)
    while queue:  # breadth first, as TensorFlow names keys: the first path found is the key's
        parent = queue.popleft()
        for child in nodes[parent].children:
            node_id = check(child.node_id, f"a child of node {parent}")
            if node_id not in reached:
                reached.add(node_id)
                link[node_id] = (parent, child.local_name)
                queue.append(node_id)
    slots: dict[int, tuple[int, int, str]] = {}
    for optimizer, node in enumerate(nodes):
        for slot in node.slot_variables:
            original = check(slot.original_variable_node_id, f"a slot of node {optimizer}")
            slot_id = check(slot.slot_variable_node_id, f"a slot of node {optimizer}")
            if original in reached and optimizer in reached and slot_id not in reached:
                slots.setdefault(slot_id, (original, optimizer, slot.slot_name))
    budget = [_MAX_PATH_PARTS + 16 * len(data)]

    def parts(node_id: int) -> list[str]:
        out = []
        while node_id in link:
            node_id, name = link[node_id]
            out.append(name)
            budget[0] -= 1
            if budget[0] < 0:
                raise DataLossError(f"{OBJECT_GRAPH_KEY}: object paths too long for a graph of {count} nodes")
        return out[::-1]

    def path_of(node_id: int) -> str:
        if node_id in slots:
            original, optimizer, slot_name = slots[node_id]
            return "/".join([*parts(original), _SLOT, *parts(optimizer), slot_name])
        return "/".join(parts(node_id))

    by_path: dict[str, str] = {}
    by_full: dict[str, dict[str, None]] = {}
    keys: list[str] = []
    for node_id, node in enumerate(nodes):
        for attribute in node.attributes:
            key = attribute.checkpoint_key
            keys.append(key)
            if attribute.name == _VARIABLE_VALUE and (node_id in link or node_id in slots):
                by_path[path_of(node_id)] = key
            if attribute.full_name:
                by_full.setdefault(attribute.full_name, {})[key] = None
    return ObjectGraphNames(
        paths=by_path,
        full_names={name: next(iter(found)) for name, found in by_full.items() if len(found) == 1},
        ambiguous={name: tuple(found) for name, found in by_full.items() if len(found) > 1},
        keys=tuple(keys),
    )


def read_object_graph(checkpoint_path: PathLike) -> ObjectGraphNames:
    """The object graph of a checkpoint (a prefix or a directory).

    Raises:
        NotACheckpointError: nothing is there.
        NotFoundError: the checkpoint has no ``_CHECKPOINTABLE_OBJECT_GRAPH`` (a name-based one).
        DataLossError: the graph is not a scalar string holding a ``TrackableObjectGraph``.
    """
    from jaxsaver import _pipeline

    with _pipeline.open_checkpoint(checkpoint_path) as reader:
        if not reader.has_tensor(OBJECT_GRAPH_KEY):
            raise NotFoundError(f"Key {OBJECT_GRAPH_KEY} not found in checkpoint {checkpoint_path}")
        value = reader.get_tensor(OBJECT_GRAPH_KEY)
    if np.shape(value) != () or not isinstance(np.asarray(value).item(), bytes):
        raise DataLossError(
            f"{OBJECT_GRAPH_KEY} in {checkpoint_path} must be a scalar string, got "
            f"{np.asarray(value).dtype} {list(np.shape(value))}"
        )
    return parse_object_graph(np.asarray(value).item())


def object_graph_key_mapping(checkpoint_path: PathLike) -> dict[str, str]:
    """The seed's ``object_graph_key_mapping``: names (object paths and full names) → keys.

    Raises:
        NotFoundError: the checkpoint is not object-based.
    """
    return read_object_graph(checkpoint_path).names_to_keys()


def rename_saveables(
    saveables: Sequence[Saveable],
    names_to_keys: Mapping[str, str],
    *,
    graph: ObjectGraphNames | None = None,
) -> tuple[Saveable, ...]:
    """The saveables read from the keys ``names_to_keys`` gives their names (tree names kept).

    Raises:
        NotFoundError: some names are not in the map; lists the missing names, the checkpoint's
            names left over and how many did match (TensorFlow's message).
    """
    missing = [s.name for s in saveables if s.name not in names_to_keys]
    if missing:
        used = {names_to_keys[s.name] for s in saveables if s.name in names_to_keys}
        if graph is not None:
            labels = graph.labels()
            extra = sorted(label for k, label in labels.items() if k not in used)
            ambiguous = {n: graph.ambiguous[n] for n in missing if n in graph.ambiguous}
        else:
            extra = sorted(n for n, k in names_to_keys.items() if k not in used)
            ambiguous = {}
        message = (
            f"\n\nExisting variables not in the checkpoint: {', '.join(sorted(missing))}\n\n"
            f"Variables names when this checkpoint was written which don't exist now: {', '.join(extra)}\n\n"
            f"({len(saveables) - len(missing)} variable name(s) did match)\n\n"
        )
        if ambiguous:
            message += "Names several variables had when it was written (ambiguous): " + "; ".join(
                f"{n} -> {', '.join(keys)}" for n, keys in ambiguous.items()
            ) + "\n\n"
        message += (
            "Could not find some variables in the checkpoint (see names above). Saver was attempting "
            "to load an object-based checkpoint (saved using tf.train.Checkpoint or "
            "tf.keras.Model.save_weights) using variable names. Leaves are matched by their object "
            "path from the checkpoint's root (e.g. 'model/layers/0/kernel') or by the variable's "
            "name when it was written (e.g. 'dense/kernel'). Shape the template like the "
            "checkpoint's object tree, rename with Saver(var_list={old_name: leaf}, template=...), "
            "or pass names_to_keys={leaf_name: checkpoint_key} to "
            "jaxsaver.interop.tf2.saver_from_object_based_checkpoint."
        )
        raise NotFoundError(message)
    return tuple(_renamed(s, names_to_keys[s.name]) for s in saveables)


def _renamed(saveable: Saveable, name: str) -> Saveable:
    """``saveable`` stored under ``name``; restores still place it at its own tree name."""
    specs = tuple(dataclasses.replace(spec, name=name) for spec in saveable.specs)
    return dataclasses.replace(saveable, name=name, specs=specs, tree_name=saveable.key)


def object_based_saveables(saveables: Sequence[Saveable], save_path: PathLike, error: NotFoundError) -> tuple[Saveable, ...]:
    """The restore fallback of :class:`jaxsaver.Saver`: the saveables renamed by the object graph.

    Re-raises ``error`` (the missing keys) when the checkpoint is not object-based.
    """
    try:
        graph = read_object_graph(save_path)
    except NotFoundError as err:
        if isinstance(err, CheckpointNotFoundError):
            raise
        raise error from None
    renamed = rename_saveables(saveables, graph.names_to_keys(), graph=graph)
    exact = set(graph.paths) | set(graph.keys)
    by_variable_name = [s.name for s in saveables if s.name not in exact]
    if by_variable_name:  # object paths are exact; variable names are what TF calls fragile
        logger.warning(
            "Restoring an object-based checkpoint using a name-based saver. This may be somewhat "
            "fragile: %d leaves (e.g. %s) are matched by the variable names they had when the "
            "checkpoint was written. Consider jaxsaver.interop.tf2.saver_from_object_based_checkpoint "
            "with names_to_keys.", len(by_variable_name), by_variable_name[0],
        )
    else:
        logger.info("Restoring an object-based checkpoint by object paths: %s", save_path)
    return renamed


# ----------------------------------------------------------------------------- writing


def escape_local_name(name: str) -> str:
    """TensorFlow's escaping of one local name inside a checkpoint key (``.`` → ``..``, ``/`` → ``.S``).

    Example:
        >>> escape_local_name("a/b.c")
        'a.Sb..c'
    """
    return name.replace(".", "..").replace("/", ".S")


def object_key(path: str) -> str:
    """The checkpoint key ``tf.train.Checkpoint`` gives the variable at object path ``path``.

    Example:
        >>> object_key("params/layers/0/kernel")
        'params/layers/0/kernel/.ATTRIBUTES/VARIABLE_VALUE'
    """
    return "/".join(escape_local_name(part) for part in path.split("/")) + "/.ATTRIBUTES/" + _VARIABLE_VALUE


def build_object_graph(entries: Iterable[tuple[str, str]]) -> TrackableObjectGraph:
    """A graph whose root reaches each ``(object_path, checkpoint_key)`` along the path's parts.

    Raises:
        InvalidArgumentError: a path has an empty part (``a//b``, a leading or trailing ``/``).
    """
    graph = TrackableObjectGraph()
    graph.nodes.add()
    index: dict[tuple[int, str], int] = {}
    for path, key in entries:
        parts = path.split("/")
        if not all(parts):
            raise InvalidArgumentError(
                f"object_graph=True: the checkpoint name {path!r} has an empty part between '/'s, "
                "which no tf.Module attribute can match; rename it with var_list"
            )
        node_id = 0
        for part in parts:
            child = index.get((node_id, part))
            if child is None:
                child = len(graph.nodes)
                graph.nodes.add()
                graph.nodes[node_id].children.add(node_id=child, local_name=part)
                index[(node_id, part)] = child
            node_id = child
        graph.nodes[node_id].attributes.add(name=_VARIABLE_VALUE, full_name=path, checkpoint_key=key)
    for node in graph.nodes:
        node.has_checkpoint_values.value = True
    return graph


def with_object_graph(
    saveables: Sequence[Saveable], leaves: Sequence[Any], global_step: int | None
) -> tuple[tuple[Saveable, ...], list[Any]]:
    """The saveables and leaves of a save, keyed as TF2 keys them, plus the object graph.

    Each leaf is stored under :func:`object_key` of its name (TensorFlow's restore requires
    that form); the graph's object paths are the names and its ``full_name`` too, so a name-based
    restore (jaxsaver's or TF1's) finds them through the graph. ``save_counter`` (``global_step``,
    or 0) is added unless a leaf is named so.

    Raises:
        InvalidArgumentError: a leaf is already named ``_CHECKPOINTABLE_OBJECT_GRAPH`` or
            ``save_counter/.ATTRIBUTES/VARIABLE_VALUE``.
    """
    names = [s.name for s in saveables]
    clashes = [n for n in names if n in (OBJECT_GRAPH_KEY, SAVE_COUNTER_KEY)]
    if clashes:
        raise InvalidArgumentError(f"object_graph=True writes its own {', '.join(clashes)}; rename that leaf")
    for name in names:
        if not all(name.split("/")):
            raise InvalidArgumentError(
                f"object_graph=True: the checkpoint name {name!r} has an empty part between '/'s, "
                "which no tf.Module attribute can match; rename it with var_list"
            )
    keyed = tuple(_renamed(s, object_key(s.name)) for s in saveables)
    entries = [(s.name, k.name) for s, k in zip(saveables, keyed)]
    extra: dict[str, Any] = {}
    if SAVE_COUNTER not in names:
        extra[SAVE_COUNTER_KEY] = np.int64(global_step or 0)
        entries.append((SAVE_COUNTER, SAVE_COUNTER_KEY))
    extra[OBJECT_GRAPH_KEY] = build_object_graph(entries).SerializeToString()
    added = saveables_from_pytree(extra)
    return (*keyed, *added), [*leaves, *(extra[s.name] for s in added)]

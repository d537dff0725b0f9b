"""``export_meta_graph`` / ``import_meta_graph``: a saver, its tree and ``jax.export``-ed functions in one ``.meta``.

A ``.meta`` file is a TensorFlow ``MetaGraphDef`` (TensorFlow parses it): the ``SaverDef``, one
``SignatureDef`` per exported function (its input and output leaves with TF dtypes and shapes) and
the collections sit in TensorFlow's own fields; what only JAX needs (the pytree structure, the
saveables with their shardings, each function's ``jax.export`` bytes and trees, the versions) is
a ``JaxMetaGraph`` message in ``meta_info_def.any_info``. Nothing in a ``.meta`` is pickled or
imported: reading one runs no Python code from it.

Example:
    >>> import os, tempfile, jax, jax.numpy as jnp
    >>> from jaxsaver import Saver
    >>> params = {"w": jnp.ones((2, 3))}
    >>> saver = Saver(template=params)
    >>> predict = jax.jit(lambda p, x: x @ p["w"])
    >>> path = os.path.join(tempfile.mkdtemp(), "model.meta")
    >>> _ = export_meta_graph(path, saver=saver, functions={"predict": (predict, (params, jnp.ones((1, 2))))})
    >>> saver2, graph = import_meta_graph(path)
    >>> graph.template
    {'w': ShapeDtypeStruct(shape=(2, 3), dtype=float32, sharding=SingleDeviceSharding(device=CpuDevice(id=0), memory_kind=device))}
    >>> graph.functions["predict"](params, jnp.ones((1, 2))).tolist()
    [[2.0, 2.0, 2.0]]
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
from google.protobuf import message as _message
from google.protobuf import text_format

from jaxsaver import _meta_codec as codec
from jaxsaver import _treedef_codec as trees
from jaxsaver._meta_display import parse_meta_graph
from jaxsaver._errors import DataLossError, InvalidArgumentError, UnimplementedError
from jaxsaver._format.crc import crc32c
from jaxsaver._proto import meta_graph_pb2
from jaxsaver._storage import resolve
from jaxsaver.saveables import Saveable, saveables_from_pytree
from jaxsaver.saver import Saver

__all__ = ["ExportedFunction", "FORMAT_VERSION", "MetaGraph", "MetaInfo", "export_meta_graph", "import_meta_graph"]

logger = logging.getLogger(__name__)

# The .meta format version, checked on read. Version log:
#   1 (2026-11): SaverDef + a JSON list of leaves in collection_def["jaxsaver_tree"].
#   2 (2026-12-02): JaxMetaGraph in meta_info_def.any_info (tree, saveables with shardings,
#      functions, versions, collection kinds); SignatureDefs; the JSON collection is gone.
# Rule: a reader reads every version up to its own and refuses newer ones naming both.
FORMAT_VERSION = 2
_VERSION_PREFIX = "jaxsaver-"
_TAG = "jaxsaver"
_METHOD_NAME = "jax.export"
_V1_TREE_COLLECTION = "jaxsaver_tree"
_ANY_TYPE = "jaxsaver.JaxMetaGraph"


def _version_of(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaInfo:
    """What a ``.meta`` says about itself."""

    format_version: int
    """The ``.meta`` format version (:data:`FORMAT_VERSION` when written by this jaxsaver)."""
    jaxsaver_version: str = ""
    """jaxsaver's version at export."""
    jax_version: str = ""
    """jax's version at export."""
    jaxlib_version: str = ""
    """jaxlib's version at export."""
    tags: tuple[str, ...] = ()
    """The user's tags (``"jaxsaver"`` itself is implied)."""
    description: str = ""
    """Free text from the exporter."""


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class ExportedFunction:
    """A function exported with ``jax.export``: callable, with its trees and serialized bytes.

    Functions jaxsaver exports from ``(jitted_fn, example_args)`` are exported over their
    flattened leaves and called through the recorded input and output structures, so they take
    and return plain containers (dicts for the exporter's custom nodes such as ``TrainState``) and
    need no pytree registration; a user's own ``jax.export.Exported`` is called as
    ``exported.call(*args, **kwargs)``.
    """

    name: str
    """The function's name in the ``.meta``."""
    exported: jax.export.Exported
    """The ``jax.export.Exported``."""
    serialized: bytes
    """``exported.serialize()``, kept as read so that a re-export writes the same bytes."""
    flat: bool
    """Whether jaxsaver exported it over flattened leaves (else the user's own ``Exported``)."""
    in_tree: meta_graph_pb2.PyTreeDef
    """The inputs' structure: the positional args tuple (flat), or ``(args, kwargs)``."""
    out_tree: meta_graph_pb2.PyTreeDef
    """The outputs' structure."""
    in_aval_defs: tuple[meta_graph_pb2.AvalDef, ...]
    """Each input leaf's dtype, shape and weak type, as exported (serialization drops weak types)."""
    out_aval_defs: tuple[meta_graph_pb2.AvalDef, ...]
    """Each output leaf's dtype, shape and weak type, as exported."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.flat:
            return self.exported.call(*args, **kwargs)
        if kwargs:
            raise InvalidArgumentError(f"Function {self.name!r} takes positional arguments only, got {sorted(kwargs)}.")
        try:
            leaves = trees.flatten(self.in_tree, args)
        except InvalidArgumentError as err:
            raise InvalidArgumentError(f"Function {self.name!r}: {err}") from None
        outputs = self.exported.call(*leaves)
        return trees.decode(self.out_tree, list(outputs))

    @property
    def in_avals(self) -> tuple:
        return tuple(self.exported.in_avals)

    @property
    def out_avals(self) -> tuple:
        return tuple(self.exported.out_avals)

    def to_proto(self) -> meta_graph_pb2.FunctionDef:
        calling = meta_graph_pb2.FunctionDef.FLAT if self.flat else meta_graph_pb2.FunctionDef.EXPORTED
        return meta_graph_pb2.FunctionDef(
            calling=calling, serialized=self.serialized, crc32c=crc32c(self.serialized),
            in_tree=self.in_tree, out_tree=self.out_tree,
            in_avals=self.in_aval_defs, out_avals=self.out_aval_defs,
        )

    def __repr__(self) -> str:
        return f"ExportedFunction({self.name!r}, in={trees.describe(self.in_tree)}, out={trees.describe(self.out_tree)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class MetaGraph:
    """What :func:`import_meta_graph` read besides the saver."""

    functions: Mapping[str, ExportedFunction] = field(default_factory=dict)
    """The exported functions by name, callable."""
    template: Any = None
    """The saver's template: ``jax.ShapeDtypeStruct`` leaves (with shardings unless
    ``clear_devices``), custom nodes as dicts; None if the ``.meta`` has no tree."""
    collections: Mapping[str, tuple] = field(default_factory=dict)
    """The collections by name: bytes, str, int, float, or the saver's :class:`Saveable` objects."""
    meta_info: MetaInfo
    """Versions, tags and description."""
    meta_graph_def: meta_graph_pb2.MetaGraphDef
    """The parsed proto."""

    def _repr_html_(self) -> str:
        from jaxsaver.inspect import meta_graph_html

        return meta_graph_html(self.meta_graph_def)

    def __repr__(self) -> str:
        from jaxsaver.inspect import meta_graph_text

        return meta_graph_text(self.meta_graph_def)


# ---------------------------------------------------------------------------------- export


def as_exported_function(name: str, function: Any) -> ExportedFunction:
    """An :class:`ExportedFunction` from an ``Exported``, an ``ExportedFunction`` or ``(jitted_fn, example_args)``.

    Raises:
        InvalidArgumentError: anything else, or ``jax.export`` failed; the message names the function.
    """
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"Function names must be non-empty strings, got {name!r}.")
    if isinstance(function, ExportedFunction):
        return function if function.name == name else dataclasses.replace(function, name=name)
    if isinstance(function, jax.export.Exported):
        return ExportedFunction(
            name=name, exported=function, serialized=bytes(function.serialize()), flat=False,
            in_tree=trees.encode_treedef(function.in_tree), out_tree=trees.encode_treedef(function.out_tree),
            in_aval_defs=_aval_defs(function.in_avals), out_aval_defs=_aval_defs(function.out_avals),
        )
    if not (isinstance(function, tuple) and len(function) == 2 and callable(function[0])
            and isinstance(function[1], (tuple, list))):
        raise InvalidArgumentError(
            f"Function {name!r}: expected a jax.export.Exported or a (jitted_fn, example_args) pair with "
            f"example_args a tuple of positional arguments, got {type(function).__name__}."
        )
    fn, example_args = function[0], tuple(function[1])
    leaves, treedef = jax.tree_util.tree_flatten(example_args)
    in_tree = trees.encode(example_args)
    out_trees: list[meta_graph_pb2.PyTreeDef] = []

    def flat_fn(*flat_args: Any) -> list[Any]:
        out = fn(*jax.tree_util.tree_unflatten(treedef, flat_args))
        out_trees.append(trees.encode(out))
        return jax.tree_util.tree_leaves(out)

    try:
        exported = jax.export.export(jax.jit(flat_fn))(*leaves)
    except InvalidArgumentError as err:
        raise InvalidArgumentError(f"Function {name!r}: {err}") from None
    except Exception as err:  # jax.export's own errors, whatever their class
        raise InvalidArgumentError(f"Function {name!r}: jax.export failed: {type(err).__name__}: {err}") from err
    return ExportedFunction(
        name=name, exported=exported, serialized=bytes(exported.serialize()), flat=True,
        in_tree=in_tree, out_tree=out_trees[-1],
        in_aval_defs=_aval_defs(exported.in_avals), out_aval_defs=_aval_defs(exported.out_avals),
    )


def _aval_defs(avals: Any) -> tuple[meta_graph_pb2.AvalDef, ...]:
    return tuple(codec.aval_to_proto(a) for a in avals)


def _signature(function: ExportedFunction) -> meta_graph_pb2.SignatureDef:
    """TensorFlow's view of a function: its leaves by name, with dtypes and shapes."""
    out = meta_graph_pb2.SignatureDef(method_name=_METHOD_NAME)
    for target, tree, avals, bare in ((out.inputs, function.in_tree, function.in_aval_defs, "input"),
                                      (out.outputs, function.out_tree, function.out_aval_defs, "output")):
        names = trees.leaf_names(tree)
        for index, (name, aval) in enumerate(zip(names, avals)):
            key = name or bare  # a tree that is one leaf
            if key in target:
                key = f"{key}#{index}"
            target[key].CopyFrom(codec.tensor_info(key, aval))
    return out


def _info_fields(meta_info_def: Any) -> tuple[tuple[str, ...], str]:
    if meta_info_def is None:
        return (), ""
    if isinstance(meta_info_def, MetaInfo):
        return tuple(meta_info_def.tags), meta_info_def.description
    if isinstance(meta_info_def, meta_graph_pb2.MetaGraphDef.MetaInfoDef):
        return tuple(t for t in meta_info_def.tags if t != _TAG), ""
    if isinstance(meta_info_def, Mapping):
        unknown = sorted(set(meta_info_def) - {"tags", "description"})
        if unknown:
            raise InvalidArgumentError(f"meta_info_def: unknown keys {unknown} (expected 'tags', 'description').")
        tags = meta_info_def.get("tags", ())
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise InvalidArgumentError(f"meta_info_def['tags'] must be a list of str, got {tags!r}.")
        return tuple(t for t in tags if t != _TAG), str(meta_info_def.get("description", ""))
    raise InvalidArgumentError(
        f"meta_info_def must be a MetaInfo, a MetaGraphDef.MetaInfoDef or a dict, got {type(meta_info_def).__name__}."
    )


def _scoped(name: str, scope: str | None) -> str | None:
    """``name`` without ``scope/`` (None when outside the scope)."""
    if not scope:
        return name
    return name[len(scope) + 1:] if name.startswith(scope + "/") else None


def _saver_parts(meta: meta_graph_pb2.MetaGraphDef, info: meta_graph_pb2.JaxMetaGraph, saver: Saver,
                 export_scope: str | None, clear_devices: bool) -> dict[int, str]:
    """Writes the saver's SaverDef, saveables and tree; returns the exported saveables' names by id."""
    saver_def = saver.to_proto(export_scope)
    if saver_def is not None:
        meta.saver_def.CopyFrom(saver_def)
    exported: dict[int, str] = {}
    by_tree_name: dict[str, Saveable] = {}
    for saveable in saver.saveables:
        tree_name = _scoped(saveable.key, export_scope)
        if tree_name is None:
            continue
        info.saveables.add().CopyFrom(codec.saveable_to_proto(saveable, tree_name=tree_name, clear_devices=clear_devices))
        exported[id(saveable)] = saveable.name
        by_tree_name[tree_name] = saveable
    template = getattr(saver, "_template", None)
    if template is None or not saver.saveables:
        return exported
    recorded = getattr(saver, "_imported_structure", None)  # a saver from a .meta writes what it read
    tree = recorded[0] if recorded else trees.encode(template)
    if export_scope:
        tree = trees.subtree(tree, export_scope.split("/"))
    info.tree.CopyFrom(tree)
    info.has_tree = True
    names = trees.leaf_names(tree)
    if len(set(names)) != len(names):
        raise InvalidArgumentError("The template has two leaves with one name; it cannot be exported.")
    if recorded:
        for spec in recorded[1]:
            name = _scoped(spec.tree_name, export_scope)
            if name is not None:
                out = info.unsaved_leaves.add()
                out.CopyFrom(spec)
                out.name = out.tree_name = name
                if clear_devices:
                    out.ClearField("sharding")
        return exported
    leaves = jax.tree_util.tree_leaves(template)
    if export_scope:
        prefix = export_scope + "/"
        leaves = [leaf for n, leaf in zip(trees.leaf_names(trees.encode(template)), leaves) if n.startswith(prefix)]
    for name, leaf in zip(names, leaves):
        if name in by_tree_name:
            continue
        [unsaved] = saveables_from_pytree({"_": leaf})
        spec = codec.saveable_to_proto(unsaved, clear_devices=clear_devices)
        spec.name, spec.tree_name = name, name
        info.unsaved_leaves.add().CopyFrom(spec)
    return exported


def export_meta_graph(
    filename: Any = None,
    *,
    saver: Saver | None = None,
    functions: Mapping[str, Any] | None = None,
    collection_list: Mapping[str, Any] | None = None,
    as_text: bool = False,
    export_scope: str | None = None,
    clear_devices: bool = False,
    meta_info_def: Any = None,
) -> meta_graph_pb2.MetaGraphDef:
    """Builds (and writes, if ``filename``) a ``MetaGraphDef``: ``tf.compat.v1.train.export_meta_graph``.

    Args:
        filename: where to write it (local path or store URL); None only returns it.
        saver: the :class:`Saver` whose ``SaverDef``, saveables and template tree to record.
        functions: ``{name: fn}`` with ``fn`` a ``jax.export.Exported``, an imported
            :class:`ExportedFunction`, or a ``(jitted_fn, example_args)`` pair exported here
            (``example_args`` a tuple of arrays / ``jax.ShapeDtypeStruct`` pytrees).
        collection_list: ``{name: values}``; values all bytes, str, int, float (float32, exact) or
            saveables of ``saver`` (JAX has no graph collections, so they are passed here).
        as_text: write the text format instead of binary.
        export_scope: keep only the saveables and the subtree under this scope, with it
            stripped from their names in the tree (checkpoint keys are unchanged, as in TF).
        clear_devices: record no shardings.
        meta_info_def: tags and description: a :class:`MetaInfo`, a ``MetaInfoDef`` or
            ``{"tags": [...], "description": "..."}``.

    Returns:
        The ``MetaGraphDef``.

    Raises:
        InvalidArgumentError: a function could not be exported, a collection value has no
            encoding, or ``export_scope`` names no subtree.
    """
    tags, description = _info_fields(meta_info_def)
    meta = meta_graph_pb2.MetaGraphDef()
    meta.meta_info_def.meta_graph_version = f"{_VERSION_PREFIX}{FORMAT_VERSION}"
    meta.meta_info_def.tags.extend((_TAG,) + tuple(dict.fromkeys(tags)))
    info = meta_graph_pb2.JaxMetaGraph(
        format_version=FORMAT_VERSION, jaxsaver_version=_version_of("jaxsaver"), jax_version=jax.__version__,
        jaxlib_version=_version_of("jaxlib"), description=description,
    )
    saveable_names: dict[int, str] = {}
    if saver is not None:
        saveable_names = _saver_parts(meta, info, saver, export_scope, clear_devices)
    for name in sorted(functions or {}):
        function = as_exported_function(name, functions[name])
        info.functions[name].CopyFrom(function.to_proto())
        meta.signature_def[name].CopyFrom(_signature(function))
    for name in sorted(collection_list or {}):
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"Collection names must be non-empty strings, got {name!r}.")
        collection, kind = codec.collection_to_proto(name, collection_list[name], saveable_names)
        meta.collection_def[name].CopyFrom(collection)
        if kind:
            info.collection_kinds[name] = kind
    meta.meta_info_def.any_info.Pack(info, deterministic=True)
    if filename is not None:
        store, key = resolve(filename)
        data = text_format.MessageToString(meta).encode() if as_text else meta.SerializeToString(deterministic=True)
        store.write(key, data)
    return meta


# ---------------------------------------------------------------------------------- import


def _read(meta_graph_or_file: Any) -> tuple[meta_graph_pb2.MetaGraphDef, str]:
    if isinstance(meta_graph_or_file, meta_graph_pb2.MetaGraphDef):
        return meta_graph_or_file, "the MetaGraphDef"
    if not isinstance(meta_graph_or_file, (str, os.PathLike)):
        raise InvalidArgumentError(
            f"import_meta_graph takes a MetaGraphDef or a file name, got {type(meta_graph_or_file).__name__}."
        )
    filename = os.fspath(meta_graph_or_file)
    store, key = resolve(filename)
    data = store.read(key)
    return parse_meta_graph(data, filename), filename


def _jax_info(meta: meta_graph_pb2.MetaGraphDef, where: str) -> meta_graph_pb2.JaxMetaGraph | None:
    version_text = meta.meta_info_def.meta_graph_version
    version = None
    if version_text.startswith(_VERSION_PREFIX):
        try:
            version = int(version_text[len(_VERSION_PREFIX):])
        except ValueError:
            raise DataLossError(f"{where}: malformed format version {version_text!r}.") from None
    if version is not None and version > FORMAT_VERSION:
        raise UnimplementedError(
            f"{where} was written in .meta format version {version_text}, newer than {_VERSION_PREFIX}"
            f"{FORMAT_VERSION}, the newest this jaxsaver ({_version_of('jaxsaver')}) reads; upgrade jaxsaver."
        )
    any_info = meta.meta_info_def.any_info
    if not any_info.type_url.endswith("/" + _ANY_TYPE):
        return None
    info = meta_graph_pb2.JaxMetaGraph()
    try:
        info.ParseFromString(any_info.value)
    except _message.DecodeError as err:
        raise DataLossError(f"{where}: malformed jaxsaver data in meta_info_def.any_info: {err}") from None
    if info.format_version > FORMAT_VERSION:
        raise UnimplementedError(
            f"{where} was written in .meta format version {_VERSION_PREFIX}{info.format_version}, newer than "
            f"{_VERSION_PREFIX}{FORMAT_VERSION}, the newest this jaxsaver ({_version_of('jaxsaver')}) reads; "
            "upgrade jaxsaver."
        )
    return info


def _import_function(name: str, proto: meta_graph_pb2.FunctionDef, where: str) -> ExportedFunction:
    data = bytes(proto.serialized)
    if crc32c(data) != proto.crc32c:
        raise DataLossError(f"{where}: the serialized bytes of function {name!r} are corrupt (checksum mismatch).")
    try:
        exported = jax.export.deserialize(bytearray(data))
    except Exception as err:  # any failure of jax's decoder is a corrupt function
        raise DataLossError(f"{where}: function {name!r} cannot be deserialized: {type(err).__name__}: {err}") from None
    for tree, avals, side in ((proto.in_tree, exported.in_avals, "inputs"), (proto.out_tree, exported.out_avals, "outputs")):
        try:
            count = trees.num_leaves(tree) if proto.calling == meta_graph_pb2.FunctionDef.FLAT else len(avals)
            trees.leaf_names(tree)
        except DataLossError as err:
            raise DataLossError(f"{where}: function {name!r} {side}: {err}") from None
        recorded = len(proto.in_avals if side == "inputs" else proto.out_avals)
        if count != len(avals) or recorded != len(avals):
            raise DataLossError(f"{where}: function {name!r} records {count} {side} for {len(avals)} exported ones.")
    return ExportedFunction(
        name=name, exported=exported, serialized=data, flat=proto.calling == meta_graph_pb2.FunctionDef.FLAT,
        in_tree=proto.in_tree, out_tree=proto.out_tree,
        in_aval_defs=tuple(proto.in_avals), out_aval_defs=tuple(proto.out_avals),
    )


class _ImportedSaver(Saver):
    """A :class:`Saver` rebuilt from recorded saveables (checkpoint keys and tree names as stored)."""

    def __init__(self, saveables: tuple[Saveable, ...], *, template: Any, saver_def: Any, name: str | None,
                 structure: tuple | None) -> None:
        self._imported_saveables = saveables
        self._imported_structure = structure
        super().__init__(template=template, saver_def=saver_def, name=name, defer_build=True)
        self._var_list = dict.fromkeys(s.name for s in saveables)  # values may carry unsaved leaves
        self.build()

    def _collect_saveables(self) -> tuple[Saveable, ...]:
        return self._imported_saveables


def _wrap_scope(tree: Any, scope: str | None) -> Any:
    for part in reversed(scope.split("/") if scope else []):
        tree = {part: tree}
    return tree


def _template(info: meta_graph_pb2.JaxMetaGraph, saveables: tuple[Saveable, ...], clear_devices: bool,
              import_scope: str | None, where: str) -> Any:
    if not info.has_tree:
        return None
    prefix = f"{import_scope}/" if import_scope else ""
    by_name: dict[str, Any] = {}
    for saveable in saveables:
        by_name[saveable.key[len(prefix):]] = codec.template_leaf(saveable)
    for spec in info.unsaved_leaves:
        by_name[spec.tree_name] = codec.template_leaf(codec.saveable_from_proto(spec, clear_devices=clear_devices))
    try:
        names = trees.leaf_names(info.tree)
    except DataLossError as err:
        raise DataLossError(f"{where}: the tree: {err}") from None
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DataLossError(f"{where}: tree leaves with no recorded spec: {missing[:10]}")
    return _wrap_scope(trees.decode(info.tree, [by_name[n] for n in names]), import_scope)


def import_meta_graph(meta_graph_or_file: Any, clear_devices: bool = False, import_scope: str | None = None
                      ) -> tuple[Saver | None, MetaGraph]:
    """Recreates a saver and the exported functions from a ``.meta``: ``tf.compat.v1.train.import_meta_graph``.

    Args:
        meta_graph_or_file: a ``MetaGraphDef`` or the file name (binary or text) of one.
        clear_devices: ignore recorded shardings: the template carries none and restore places
            arrays on the default device.
        import_scope: prefix the tree (nested dicts) and the saver's op names with this scope;
            checkpoint keys are unchanged, as in TF.

    Returns:
        ``(saver, graph)``: a working :class:`Saver` (None when there are no saveables and no
        ``SaverDef``; without recorded saveables it restores every tensor as numpy) whose later
        saves carry the same functions and collections, and a :class:`MetaGraph`.

    Raises:
        CheckpointNotFoundError: the file does not exist.
        DataLossError: the file or a function in it is corrupt (the message names which).
        UnimplementedError: the file is of a newer format version (both versions named).
    """
    meta, where = _read(meta_graph_or_file)
    info = _jax_info(meta, where)
    saveables: tuple[Saveable, ...] = ()
    functions: dict[str, ExportedFunction] = {}
    template = None
    if info is not None:
        saveables = tuple(codec.saveable_from_proto(s, clear_devices=clear_devices, tree_prefix=import_scope or "")
                          for s in info.saveables)
        template = _template(info, saveables, clear_devices, import_scope, where)
        for name in sorted(info.functions):
            functions[name] = _import_function(name, info.functions[name], where)
    by_name = {s.name: s for s in saveables}
    kinds = dict(info.collection_kinds) if info is not None else {}
    collections = {
        name: codec.collection_from_proto(name, meta.collection_def[name], kinds.get(name, ""), by_name)
        for name in sorted(meta.collection_def) if name != _V1_TREE_COLLECTION
    }
    tags = tuple(t for t in meta.meta_info_def.tags if t != _TAG)
    meta_info = MetaInfo(
        format_version=info.format_version if info is not None else _v1_or_zero(meta),
        jaxsaver_version=info.jaxsaver_version if info else "", jax_version=info.jax_version if info else "",
        jaxlib_version=info.jaxlib_version if info else "", tags=tags, description=info.description if info else "",
    )
    saver_def = meta.saver_def if meta.HasField("saver_def") else None
    saver: Saver | None = None
    if saveables:
        structure = None
        if info.has_tree:
            scope = import_scope.split("/") if import_scope else []
            unsaved = []
            for spec in info.unsaved_leaves:
                copy = meta_graph_pb2.SaveableDef()
                copy.CopyFrom(spec)
                copy.name = copy.tree_name = "/".join(scope + [spec.tree_name])
                unsaved.append(copy)
            structure = (trees.wrap(info.tree, scope), tuple(unsaved))
        saver = _ImportedSaver(saveables, template=template, saver_def=saver_def, name=import_scope,
                               structure=structure)
    elif saver_def is not None:
        saver = Saver(saver_def=saver_def, name=import_scope)
    graph = MetaGraph(
        functions=types.MappingProxyType(functions), template=template,
        collections=types.MappingProxyType(collections), meta_info=meta_info, meta_graph_def=meta,
    )
    if saver is not None:
        saver.set_meta_graph(functions=functions, collection_list=collections, meta_info_def=meta_info)
    return saver, graph


def _v1_or_zero(meta: meta_graph_pb2.MetaGraphDef) -> int:
    text = meta.meta_info_def.meta_graph_version
    return int(text[len(_VERSION_PREFIX):]) if text.startswith(_VERSION_PREFIX) else 0

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

import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
from google.protobuf import message as _message

from jaxsaver import _meta_codec as codec
from jaxsaver import _treedef_codec as trees
from jaxsaver._errors import DataLossError, InvalidArgumentError, UnimplementedError
from jaxsaver._format.crc import crc32c
from jaxsaver._meta_display import decode_jax_info, parse_meta_graph
from jaxsaver._meta_export import _TAG, _V1_TREE_COLLECTION, _VERSION_PREFIX, FORMAT_VERSION
from jaxsaver._meta_export import ExportedFunction as ExportedFunction
from jaxsaver._meta_export import MetaInfo as MetaInfo
from jaxsaver._meta_export import _version_of
from jaxsaver._meta_export import export_meta_graph as export_meta_graph
from jaxsaver._proto import meta_graph_pb2
from jaxsaver._store import resolve
from jaxsaver.saveables import Saveable
from jaxsaver.saver import Saver

__all__ = ["ExportedFunction", "FORMAT_VERSION", "MetaGraph", "MetaInfo", "export_meta_graph", "import_meta_graph"]

# FORMAT_VERSION and its version log live with the writer, jaxsaver._meta_export.


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
    try:
        info = decode_jax_info(meta)
    except _message.DecodeError as err:
        raise DataLossError(f"{where}: malformed jaxsaver data in meta_info_def.any_info: {err}") from None
    if info is None:
        return None
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

"""Writing a ``.meta``: functions exported with ``jax.export``, the saver's tree and specs, versions.

The file's layout is described in :mod:`jaxsaver.meta_graph` (which also reads it); this module
never imports :mod:`jaxsaver.saver`, so ``Saver.export_meta_graph`` can call it without a cycle.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
from google.protobuf import text_format

from jaxsaver import _meta_codec as codec
from jaxsaver import _treedef_codec as trees
from jaxsaver._errors import InvalidArgumentError
from jaxsaver._format.names import TREE_COLLECTION
from jaxsaver._format.crc import crc32c
from jaxsaver._proto import meta_graph_pb2
from jaxsaver._store import resolve
from jaxsaver.saveables import Saveable, saveables_from_pytree

if TYPE_CHECKING:
    from jaxsaver.saver import Saver

__all__ = ["ExportedFunction", "FORMAT_VERSION", "MetaInfo", "as_exported_function", "export_meta_graph"]

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
_V1_TREE_COLLECTION = TREE_COLLECTION


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

"""What a ``.meta`` holds, as plain values and text lines for the inspection views (no JAX, no I/O).

Example:
    >>> from jaxsaver._proto import meta_graph_pb2
    >>> meta = meta_graph_pb2.MetaGraphDef()
    >>> meta.meta_info_def.meta_graph_version = "jaxsaver-2"
    >>> version_lines(meta)
    ['format: jaxsaver-2']
"""

from __future__ import annotations

from typing import Any

from jaxsaver import _treedef_codec as trees
from jaxsaver._errors import DataLossError
from jaxsaver._proto import meta_graph_pb2

__all__ = ["decode_jax_info", "jax_info", "leaves_description", "parse_meta_graph", "signature_lines", "summary", "version_lines"]

#: The type_url tail of jaxsaver's data in ``meta_info_def.any_info`` (one definition).
ANY_TYPE = "jaxsaver.JaxMetaGraph"


def parse_meta_graph(data: bytes, filename: str = "<bytes>") -> meta_graph_pb2.MetaGraphDef:
    """A ``MetaGraphDef`` from binary or text bytes (``DataLossError`` naming ``filename`` if neither).

    Text is tried first when the bytes are UTF-8 (binary ``.meta`` files with exported functions
    practically never are), then binary, as TensorFlow's ``read_meta_graph_file`` accepts both.
    """
    from google.protobuf import message, text_format

    meta = meta_graph_pb2.MetaGraphDef()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.strip():
        try:
            text_format.Parse(text, meta)
            return meta
        except text_format.ParseError:
            meta.Clear()
    try:
        meta.ParseFromString(data)
    except message.DecodeError as err:
        raise DataLossError(f"{filename} is not a MetaGraphDef (binary or text): {err}") from None
    return meta


def decode_jax_info(meta: Any) -> meta_graph_pb2.JaxMetaGraph | None:
    """jaxsaver's own data in ``meta_info_def.any_info``, or None when the ``.meta`` has none.

    Raises:
        google.protobuf.message.DecodeError: the data is there but malformed.
    """
    any_info = meta.meta_info_def.any_info
    if not any_info.type_url.endswith("/" + ANY_TYPE):
        return None
    info = meta_graph_pb2.JaxMetaGraph()
    info.ParseFromString(any_info.value)
    return info


def jax_info(meta: Any) -> meta_graph_pb2.JaxMetaGraph | None:
    """jaxsaver's own data in ``meta_info_def.any_info`` (None if absent or unreadable)."""
    try:
        return decode_jax_info(meta)
    except Exception:  # noqa: BLE001 - a display shows what it can
        return None


def _keystr(parts: list[str]) -> str:
    return "".join("['" + p.replace("\\", "\\\\").replace("'", "\\'") + "']" for p in parts)


def leaves_description(meta: Any) -> dict | None:
    """``{"leaves": [{"name", "path", "dtype", "shape"}...]}`` from the recorded saveables and tree."""
    info = jax_info(meta)
    if info is None:
        return None
    paths: dict[str, list[str]] = {}
    if info.has_tree:
        try:
            for name in trees.leaf_names(info.tree):
                paths[name] = name.split("/")
        except DataLossError:
            paths = {}
    leaves = []
    for spec in info.saveables:
        tree_name = spec.tree_name or spec.name
        parts = paths.get(tree_name) or tree_name.split("/")
        leaves.append({"name": spec.name, "path": _keystr(parts), "dtype": spec.dtype, "shape": list(spec.shape)})
    return {"leaves": leaves}


def version_lines(meta: Any) -> list[str]:
    """The format version, the versions of jaxsaver, jax and jaxlib that wrote it, tags, description."""
    lines = [f"format: {meta.meta_info_def.meta_graph_version or '(none: not written by jaxsaver)'}"]
    info = jax_info(meta)
    if info is not None:
        lines.append(f"written by: jaxsaver {info.jaxsaver_version}, jax {info.jax_version}, jaxlib {info.jaxlib_version}")
    tags = [t for t in meta.meta_info_def.tags]
    if tags:
        lines.append("tags: " + ", ".join(tags))
    if info is not None and info.description:
        lines.append(f"description: {info.description}")
    return lines


def _avals_text(avals: Any, limit: int = 6) -> str:
    parts = [f"{a.dtype}[{','.join(str(d) for d in a.shape)}]" for a in avals[:limit]]
    if len(avals) > limit:
        parts.append(f"... {len(avals) - limit} more")
    return ", ".join(parts)


def signature_lines(meta: Any) -> list[str]:
    """One block per exported function: its input and output structures and leaf avals."""
    info = jax_info(meta)
    lines: list[str] = []
    for name in sorted(meta.signature_def):
        function = info.functions.get(name) if info is not None else None
        if function is None:
            signature = meta.signature_def[name]
            lines.append(f"{name}: {len(signature.inputs)} inputs, {len(signature.outputs)} outputs")
            continue
        try:
            in_text, out_text = trees.describe(function.in_tree), trees.describe(function.out_tree)
        except (DataLossError, RecursionError):
            in_text = out_text = "(malformed)"
        kind = "jaxsaver flat call" if function.calling == meta_graph_pb2.FunctionDef.FLAT else "Exported.call"
        lines.append(f"{name}({in_text}) -> {out_text}   [{kind}, {len(function.serialized):,} B]")
        lines.append(f"    in:  {_avals_text(function.in_avals)}")
        lines.append(f"    out: {_avals_text(function.out_avals)}")
    return lines


def summary(meta: Any) -> dict[str, Any]:
    """Versions, saver, leaves, signatures and collections as JSON-ready values (``jaxsaver meta --json``)."""
    info = jax_info(meta)
    out: dict[str, Any] = {
        "format": meta.meta_info_def.meta_graph_version,
        "tags": list(meta.meta_info_def.tags),
    }
    if info is not None:
        out.update(jaxsaver_version=info.jaxsaver_version, jax_version=info.jax_version,
                   jaxlib_version=info.jaxlib_version, description=info.description)
    if meta.HasField("saver_def"):
        d = meta.saver_def
        out["saver_def"] = {"filename_tensor_name": d.filename_tensor_name, "save_tensor_name": d.save_tensor_name,
                            "restore_op_name": d.restore_op_name, "max_to_keep": d.max_to_keep,
                            "sharded": d.sharded, "version": d.version}
    out["leaves"] = (leaves_description(meta) or {}).get("leaves", [])
    if info is not None and info.has_tree:
        try:
            out["tree"] = trees.describe(info.tree)
        except (DataLossError, RecursionError):
            out["tree"] = "(malformed)"
    signatures = {}
    for name in sorted(meta.signature_def):
        signature = meta.signature_def[name]
        entry: dict[str, Any] = {"method_name": signature.method_name,
                                 "inputs": sorted(signature.inputs), "outputs": sorted(signature.outputs)}
        function = info.functions.get(name) if info is not None else None
        if function is not None:
            try:
                entry.update(in_tree=trees.describe(function.in_tree), out_tree=trees.describe(function.out_tree))
            except (DataLossError, RecursionError):
                pass
            entry["in_avals"] = [f"{a.dtype}{list(a.shape)}" for a in function.in_avals]
            entry["out_avals"] = [f"{a.dtype}{list(a.shape)}" for a in function.out_avals]
            entry["serialized_bytes"] = len(function.serialized)
        signatures[name] = entry
    out["signatures"] = signatures
    out["collections"] = {name: meta.collection_def[name].WhichOneof("kind") for name in sorted(meta.collection_def)}
    return out

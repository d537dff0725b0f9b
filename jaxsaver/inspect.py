"""Inspection views of checkpoints: tree, statistics, diff, as text for terminals and HTML for notebooks.

Pure formatting: everything here works on plain values or on any object with a
``CheckpointReader``-like interface (``keys``, ``shape``, ``dtype``, ``get_slice``,
``get_tensor``, ``tensor_infos``); nothing opens files. Statistics and diffs live in
:mod:`jaxsaver._compare`, shared formatting in :mod:`jaxsaver._display`; both are re-exported here.

Example:
    >>> leaves = [TensorSummary(name="params/w", shape=(2, 3), dtype="float32", num_elements=6, nbytes=24),
    ...           TensorSummary(name="step", shape=(), dtype="int64", num_elements=1, nbytes=8)]
    >>> root = build_tree(leaves, title="model-1")
    >>> root.num_tensors, root.num_elements, root.nbytes
    (2, 7, 32)
    >>> print(tree_text(root))
    model-1: 2 tensors, 7 params, 32 B
      params/   1 tensor, 6 params, 24 B
        w      float32  [2,3]  24 B
      step     int64    []     8 B
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxsaver._compare import DiffResult as DiffResult
from jaxsaver._compare import TensorDiff as TensorDiff
from jaxsaver._compare import TensorStats as TensorStats
from jaxsaver._compare import diff_readers as diff_readers
from jaxsaver._compare import tensor_stats as tensor_stats
from jaxsaver._display import CSS, escape, plural, shape_text
from jaxsaver._display import human_size as human_size
from jaxsaver._format.names import TREE_COLLECTION as _TREE_COLLECTION

__all__ = [
    "DiffResult",
    "TensorDiff",
    "TensorStats",
    "TensorSummary",
    "TreeNode",
    "build_tree",
    "diff_readers",
    "human_size",
    "meta_graph_html",
    "meta_graph_text",
    "saver_html",
    "saver_text",
    "tensor_stats",
    "tree_description",
    "tree_html",
    "tree_text",
]

_TF2_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_KEYSTR_PART = re.compile(r"\['((?:[^'\\]|\\.)*)'\]|\[\"((?:[^\"\\]|\\.)*)\"\]|\[([^\]]*)\]|\.([^.\[]+)")


# ---------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorSummary:
    """What the index says about one tensor (no data read)."""

    name: str
    """Checkpoint key."""
    shape: tuple[int, ...]
    """Full shape (of the whole tensor, also when it is stored in slices)."""
    dtype: str
    """TensorFlow dtype name (``float32``, ``string``...)."""
    num_elements: int
    """Number of elements (1 for a scalar)."""
    nbytes: int | None = None
    """Bytes stored in the data files (all slices together); None when unknown."""
    slices: tuple = ()
    """``((start, length), ...)`` per stored slice of a partitioned tensor; empty if whole."""
    shards: tuple[int, ...] = (0,)
    """The data files (``.data-NNNNN-of-...``) holding it."""
    sharding: str = ""
    """How a live array is laid out on devices (saver views only)."""

    def storage(self) -> str:
        """A short description of slices and shards, e.g. ``3 slices in shards 0,1``."""
        parts = []
        if self.slices:
            parts.append(f"{len(self.slices)} slices " + " ".join(_extent_text(s) for s in self.slices))
        if self.sharding:
            parts.append(self.sharding)
        if len(self.shards) > 1 or (self.shards and self.shards[0] != 0):
            parts.append("shard" + ("s " if len(self.shards) > 1 else " ") + ",".join(map(str, self.shards)))
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "num_elements": self.num_elements,
            "nbytes": self.nbytes,
            "shards": list(self.shards),
        }
        if self.slices:
            out["slices"] = [[list(e) for e in s] for s in self.slices]
        if self.sharding:
            out["sharding"] = self.sharding
        return out


def _extent_text(extents: Sequence[tuple[int, int]]) -> str:
    return "[" + ",".join(f"{s}:{s + n}" for s, n in extents) + "]"


@dataclass(frozen=True, slots=True, kw_only=True)
class TreeNode:
    """A group of tensors (or one tensor) in the nested view, with totals."""

    name: str
    """This level's name (the root's is the checkpoint's title)."""
    children: tuple[TreeNode, ...] = ()
    """Sub-groups and tensors, groups first, each sorted by name."""
    tensor: TensorSummary | None = None
    """The tensor at this node (a leaf; also possible on a group whose name is a prefix)."""
    num_tensors: int = 0
    """Tensors in this subtree."""
    num_elements: int = 0
    """Elements ("params") in this subtree."""
    nbytes: int = 0
    """Stored bytes in this subtree (unknown sizes count 0)."""

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def walk(self) -> Iterable[TensorSummary]:
        """Every tensor in this subtree, in display order."""
        if self.tensor is not None:
            yield self.tensor
        for child in self.children:
            yield from child.walk()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "num_tensors": self.num_tensors,
            "num_elements": self.num_elements,
            "nbytes": self.nbytes,
        }
        if self.tensor is not None:
            out["tensor"] = self.tensor.to_dict()
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out


def _split_keystr(keystr: str) -> list[str] | None:
    parts, pos = [], 0
    for m in _KEYSTR_PART.finditer(keystr):
        if m.start() != pos:
            return None
        pos = m.end()
        text = next(g for g in m.groups() if g is not None)
        parts.append(text.replace("\\'", "'").replace('\\"', '"'))
    return parts if parts and pos == len(keystr) else None


def _unescape_tf2(part: str) -> str:
    return part.replace(".S", "/").replace("..", ".")


def _default_path(name: str) -> list[str]:
    if name.endswith(_TF2_SUFFIX):
        return [_unescape_tf2(p) for p in name[: -len(_TF2_SUFFIX)].split("/")]
    parts = name.split("/")
    return parts if all(parts) else [name]


def tree_description(meta: Any) -> dict | None:
    """The tree description a jaxsaver ``Saver`` stores in a ``MetaGraphDef`` (or None).

    Format 2 records saveables and tree in ``meta_info_def.any_info``; format 1 a JSON list in
    ``collection_def["jaxsaver_tree"]``.
    """
    from jaxsaver._meta_display import leaves_description

    described = leaves_description(meta)
    if described is not None:
        return described
    if _TREE_COLLECTION not in meta.collection_def:
        return None
    values = meta.collection_def[_TREE_COLLECTION].bytes_list.value
    if not values:
        return None
    try:
        description = json.loads(values[0])
    except ValueError:
        return None
    return description if isinstance(description, dict) else None


def build_tree(tensors: Iterable[TensorSummary], description: dict | None = None, *, title: str = "") -> TreeNode:
    """Regroups tensors into their nested structure.

    Paths come from ``description`` (a ``Saver``'s stored leaves: ``{"leaves": [{"name",
    "path"}, ...]}``, path a ``jax.tree_util.keystr``) when it names the tensor; otherwise from
    the name split on ``/`` (a TF2 object-based key loses its ``/.ATTRIBUTES/VARIABLE_VALUE``).
    """
    paths: dict[str, list[str]] = {}
    for leaf in (description or {}).get("leaves", ()):
        if isinstance(leaf, dict) and isinstance(leaf.get("path"), str):
            parts = _split_keystr(leaf["path"])
            if parts:
                paths[str(leaf.get("name"))] = parts
    root: dict = {}
    for tensor in tensors:
        parts = paths.get(tensor.name) or _default_path(tensor.name)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # unreachable: leaves are kept under a tuple key
                break
        slot = node.setdefault(parts[-1], {})
        slot[()] = tensor
    return _freeze(title, root)


def _freeze(name: str, node: dict) -> TreeNode:
    tensor = node.get(())
    kids = sorted((k for k in node if k != ()), key=lambda k: (len(node[k]) == 1 and () in node[k], k))
    children = tuple(_freeze(k, node[k]) for k in kids)
    num_tensors = sum(c.num_tensors for c in children) + (tensor is not None)
    num_elements = sum(c.num_elements for c in children) + (tensor.num_elements if tensor else 0)
    nbytes = sum(c.nbytes for c in children) + ((tensor.nbytes or 0) if tensor else 0)
    return TreeNode(
        name=name, children=children, tensor=tensor, num_tensors=num_tensors,
        num_elements=num_elements, nbytes=nbytes,
    )


def _totals(node: TreeNode) -> str:
    return f"{plural(node.num_tensors, 'tensor')}, {node.num_elements:,} params, {human_size(node.nbytes)}"


# ---------------------------------------------------------------------------------- text


def tree_text(root: TreeNode, *, max_rows: int = 2000) -> str:
    """The tree as aligned text lines (what ``repr`` shows in a terminal)."""
    rows: list[tuple[str, ...]] = []

    def visit(node: TreeNode, depth: int) -> None:
        pad = "  " * depth
        if node.children:
            rows.append((f"{pad}{node.name}/", _totals(node)))
            if node.tensor is not None:
                t = node.tensor
                rows.append((f"{pad}  .", t.dtype, shape_text(t.shape), human_size(t.nbytes), t.storage()))
            for child in node.children:
                visit(child, depth + 1)
        else:
            t = node.tensor
            rows.append((f"{pad}{node.name}", t.dtype, shape_text(t.shape), human_size(t.nbytes), t.storage()))

    for child in root.children:
        visit(child, 1)
    head = f"{root.name}: {_totals(root)}" if root.name else _totals(root)
    leaf_rows = [r for r in rows if len(r) > 2]
    widths = [max((len(r[i]) for r in leaf_rows), default=0) for i in range(4)]
    widths[0] = max([widths[0]] + [len(r[0]) for r in rows])
    lines = [head]
    for row in rows[:max_rows]:
        if len(row) == 2:
            lines.append(f"{row[0].ljust(widths[0])}   {row[1]}")
        else:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]), row[3]]
            if row[4]:
                cells[3] = cells[3].ljust(widths[3])
                cells.append(row[4])
            lines.append("  ".join(cells).rstrip())
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more rows")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- HTML

def _leaf_row(label: str, t: TensorSummary, storage: bool) -> str:
    extra = f"<td>{escape(t.storage())}</td>" if storage else ""
    return (
        f"<tr><td>{escape(label)}</td><td>{escape(shape_text(t.shape))}</td><td>{escape(t.dtype)}</td>"
        f"<td class='num'>{escape(human_size(t.nbytes))}</td>{extra}</tr>"
    )


def _group_html(node: TreeNode, depth: int, open_depth: int, storage: bool, need_header: list[bool]) -> str:
    leaves = [c for c in node.children if c.is_leaf]
    groups = [c for c in node.children if not c.is_leaf]
    parts = []
    rows = []
    if node.tensor is not None:
        rows.append(_leaf_row(".", node.tensor, storage))
    rows.extend(_leaf_row(c.name, c.tensor, storage) for c in leaves)
    if rows:
        header = ""
        if need_header[0]:  # column names once, on the first table
            need_header[0] = False
            header = ("<tr><th>name</th><th>shape</th><th>dtype</th><th class='num'>size</th>"
                      + ("<th>storage</th>" if storage else "") + "</tr>")
        parts.append("<table>" + header + "".join(rows) + "</table>")
    for group in groups:
        opened = " open" if depth < open_depth or group.num_tensors <= 8 else ""
        parts.append(
            f"<details{opened}><summary><b>{escape(group.name)}/</b> "
            f"<span class='jxs-muted'>{escape(_totals(group))}</span></summary>"
            + _group_html(group, depth + 1, open_depth, storage, need_header)
            + "</details>"
        )
    return "".join(parts)


def tree_html(root: TreeNode, *, kind: str = "CheckpointReader", open_depth: int = 2, extra: str = "") -> str:
    """The tree as a collapsible HTML table (``<details>`` per group) with totals."""
    storage = any(t.storage() for t in root.walk())
    body = _group_html(root, 0, open_depth, storage, [True])
    total = (
        f"<table><tr class='jxs-total'><td>total</td><td>{escape(plural(root.num_tensors, 'tensor'))}</td>"
        f"<td>{root.num_elements:,} params</td><td class='num'>{escape(human_size(root.nbytes))}</td></tr></table>"
    )
    return (
        f"<div class='jxs'>{CSS}<details open><summary class='jxs-head'>{escape(kind)} "
        f"<span class='jxs-muted'>{escape(root.name)}</span></summary>{extra}{body}{total}</details></div>"
    )


# ---------------------------------------------------------------------------------- savers, meta graphs


def _numpy_itemsize(name: str) -> int | None:
    if name in ("object", "string", "str", "bytes"):
        return None
    try:
        return np.dtype(name).itemsize
    except TypeError:
        try:
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, name)).itemsize
        except (AttributeError, TypeError):
            return None


def _tf_dtype_name(numpy_name: str) -> str:
    return {"object": "string", "float16": "float16", "bool": "bool"}.get(numpy_name, numpy_name)


def _summary_from_leaf(name: str, dtype: str, shape: Sequence[int], sharding: str = "") -> TensorSummary:
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    itemsize = _numpy_itemsize(dtype)
    return TensorSummary(
        name=name, shape=tuple(int(d) for d in shape), dtype=_tf_dtype_name(dtype), num_elements=count,
        nbytes=None if itemsize is None else count * itemsize, sharding=sharding,
    )


def _sharding_text(sharding: Any) -> str:
    if sharding is None:
        return ""
    spec = getattr(sharding, "spec", None)
    mesh = getattr(sharding, "mesh", None)
    if spec is not None and mesh is not None:
        axes = ",".join(f"{k}={v}" for k, v in dict(getattr(mesh, "shape", {})).items())
        return f"{spec} on mesh({axes})"
    text = str(sharding)
    return text if len(text) <= 60 else text[:57] + "..."


def _saver_summaries(saver: Any) -> tuple[list[TensorSummary], dict]:
    tensors, leaves = [], []
    for s in getattr(saver, "saveables", ()):
        spec = s.specs[0] if s.specs else None
        dtype = str(s.dtype)
        tensors.append(_summary_from_leaf(s.name, dtype, s.shape, _sharding_text(getattr(spec, "sharding", None))))
        leaves.append({"name": s.name, "path": "".join(str(k) for k in s.path)})
    return tensors, {"leaves": leaves}


def _saver_def_line(saver_def: Any) -> str:
    if saver_def is None:
        return "not built"
    version = {0: "LEGACY", 1: "V1", 2: "V2"}.get(saver_def.version, str(saver_def.version))
    return (
        f"max_to_keep={saver_def.max_to_keep}, keep_checkpoint_every_n_hours="
        f"{saver_def.keep_checkpoint_every_n_hours:g}, sharded={saver_def.sharded}, version={version}"
    )


def saver_text(saver: Any) -> str:
    """A terminal view of a ``Saver``: its SaverDef settings, tracked checkpoints and leaves."""
    tensors, description = _saver_summaries(saver)
    root = build_tree(tensors, description, title="Saver")
    lines = [f"Saver({_saver_def_line(getattr(saver, 'saver_def', None))})"]
    for path in getattr(saver, "last_checkpoints", ()):
        lines.append(f"  checkpoint: {path}")
    return "\n".join(lines + [tree_text(root)])


def saver_html(saver: Any) -> str:
    """Notebook HTML for a ``Saver`` (hook up as ``Saver._repr_html_``)."""
    tensors, description = _saver_summaries(saver)
    root = build_tree(tensors, description, title=_saver_def_line(getattr(saver, "saver_def", None)))
    checkpoints = list(getattr(saver, "last_checkpoints", ()))
    extra = ""
    if checkpoints:
        extra = "<div>checkpoints: " + ", ".join(f"<code>{escape(p)}</code>" for p in checkpoints) + "</div>"
    return tree_html(root, kind="Saver", extra=extra)


def _meta_root(meta: Any) -> TreeNode:
    description = tree_description(meta) or {}
    tensors = [
        _summary_from_leaf(str(leaf.get("name")), str(leaf.get("dtype")), leaf.get("shape") or [])
        for leaf in description.get("leaves", ())
        if isinstance(leaf, dict)
    ]
    saver_def = meta.saver_def if meta.HasField("saver_def") else None
    return build_tree(tensors, description, title=_saver_def_line(saver_def))


def meta_graph_text(meta: Any) -> str:
    """A terminal view of a ``MetaGraphDef``: versions, the saver's tree, the exported signatures."""
    from jaxsaver._meta_display import signature_lines, version_lines

    lines = ["MetaGraphDef " + tree_text(_meta_root(meta))] + version_lines(meta)
    signatures = signature_lines(meta)
    if signatures:
        lines += ["signatures:"] + ["  " + line for line in signatures]
    return "\n".join(lines)


def meta_graph_html(meta: Any) -> str:
    """Notebook HTML for a ``MetaGraphDef``: versions, SaverDef settings, the tree's leaves, signatures."""
    from jaxsaver._meta_display import signature_lines, version_lines

    extra = "".join(f"<div class='jxs-muted'>{escape(line)}</div>" for line in version_lines(meta))
    signatures = signature_lines(meta)
    if signatures:
        extra += ("<details open><summary><b>signatures</b></summary><pre>"
                  + escape("\n".join(signatures)) + "</pre></details>")
    return tree_html(_meta_root(meta), kind="MetaGraphDef", extra=extra)


def register_notebook_displays(shell: Any = None) -> bool:
    """Registers the HTML view of ``MetaGraphDef`` messages with IPython's display formatter.

    Protobuf messages cannot carry a ``_repr_html_`` of their own, so the notebook display of
    ``Saver.export_meta_graph()`` is registered by type. Called when jaxsaver is imported inside
    IPython; returns whether a shell was found.
    """
    if shell is None:
        import sys

        ipython = sys.modules.get("IPython")
        shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    from jaxsaver._proto import meta_graph_pb2

    formatters = shell.display_formatter.formatters
    formatters["text/html"].for_type(meta_graph_pb2.MetaGraphDef, meta_graph_html)
    formatters["text/plain"].for_type(meta_graph_pb2.MetaGraphDef, lambda meta, p, cycle: p.text(meta_graph_text(meta)))
    return True

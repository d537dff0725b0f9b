"""Inspection views of checkpoints: tree, statistics, diff, as text for terminals and HTML for notebooks.

Pure formatting: everything here works on plain values or on any object with a
``CheckpointReader``-like interface (``keys``, ``shape``, ``dtype``, ``get_slice``,
``get_tensor``, ``tensor_infos``); nothing opens files.

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

import html
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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

_TREE_COLLECTION = "jaxsaver_tree"
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
    """The JSON tree description a jaxsaver ``Saver`` stores in a ``MetaGraphDef`` (or None)."""
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


def human_size(nbytes: int | None) -> str:
    """``1.5 KiB`` style sizes (exact bytes below 1 KiB).

    Example:
        >>> human_size(12), human_size(1536), human_size(None)
        ('12 B', '1.5 KiB', '?')
    """
    if nbytes is None:
        return "?"
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _totals(node: TreeNode) -> str:
    return f"{_plural(node.num_tensors, 'tensor')}, {node.num_elements:,} params, {human_size(node.nbytes)}"


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


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
                rows.append((f"{pad}  .", t.dtype, _shape_text(t.shape), human_size(t.nbytes), t.storage()))
            for child in node.children:
                visit(child, depth + 1)
        else:
            t = node.tensor
            rows.append((f"{pad}{node.name}", t.dtype, _shape_text(t.shape), human_size(t.nbytes), t.storage()))

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

_CSS = """<style>
.jxs{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;line-height:1.45}
.jxs .jxs-head{font-weight:600;margin-bottom:4px}
.jxs .jxs-muted{opacity:.65;font-weight:400}
.jxs details{margin-left:14px}
.jxs > details{margin-left:0}
.jxs > details > details{margin-left:0}
.jxs summary{cursor:pointer}
.jxs table{border-collapse:collapse;margin:2px 0 2px 14px}
.jxs td,.jxs th{padding:1px 10px 1px 0;text-align:left;vertical-align:top;border:none;white-space:nowrap}
.jxs th{font-weight:600;opacity:.75}
.jxs td.num{text-align:right}
.jxs tr.jxs-total td{border-top:1px solid rgba(127,127,127,.5);font-weight:600}
.jxs .jxs-bad{color:#c62828}
.jxs .jxs-ok{color:#2e7d32}
</style>"""

def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _leaf_row(label: str, t: TensorSummary, storage: bool) -> str:
    extra = f"<td>{_e(t.storage())}</td>" if storage else ""
    return (
        f"<tr><td>{_e(label)}</td><td>{_e(_shape_text(t.shape))}</td><td>{_e(t.dtype)}</td>"
        f"<td class='num'>{_e(human_size(t.nbytes))}</td>{extra}</tr>"
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
            f"<details{opened}><summary><b>{_e(group.name)}/</b> "
            f"<span class='jxs-muted'>{_e(_totals(group))}</span></summary>"
            + _group_html(group, depth + 1, open_depth, storage, need_header)
            + "</details>"
        )
    return "".join(parts)


def tree_html(root: TreeNode, *, kind: str = "CheckpointReader", open_depth: int = 2, extra: str = "") -> str:
    """The tree as a collapsible HTML table (``<details>`` per group) with totals."""
    storage = any(t.storage() for t in root.walk())
    body = _group_html(root, 0, open_depth, storage, [True])
    total = (
        f"<table><tr class='jxs-total'><td>total</td><td>{_e(_plural(root.num_tensors, 'tensor'))}</td>"
        f"<td>{root.num_elements:,} params</td><td class='num'>{_e(human_size(root.nbytes))}</td></tr></table>"
    )
    return (
        f"<div class='jxs'>{_CSS}<details open><summary class='jxs-head'>{_e(kind)} "
        f"<span class='jxs-muted'>{_e(root.name)}</span></summary>{extra}{body}{total}</details></div>"
    )


# ---------------------------------------------------------------------------------- stats


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorStats:
    """Summary statistics of one tensor, over its finite values (complex: magnitudes)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    count: int
    """Number of elements."""
    finite: int
    """Finite elements (those min/max/mean/std cover)."""
    nan_count: int
    inf_count: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    """Population standard deviation."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "dtype": self.dtype, "shape": list(self.shape), "count": self.count,
            "finite": self.finite, "nan_count": self.nan_count, "inf_count": self.inf_count,
            "min": self.min, "max": self.max, "mean": self.mean, "std": self.std,
        }

    def __repr__(self) -> str:
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.6g}"

        return (
            f"{self.name} ({self.dtype}) {_shape_text(self.shape)}: min {f(self.min)}, max {f(self.max)}, "
            f"mean {f(self.mean)}, std {f(self.std)}, NaN {self.nan_count}, Inf {self.inf_count}"
        )

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<td>{_e(v)}</td>"
            for v in (self.name, _shape_text(self.shape), self.dtype, self.min, self.max, self.mean,
                      self.std, self.nan_count, self.inf_count)
        )
        head = "".join(f"<th>{h}</th>" for h in ("name", "shape", "dtype", "min", "max", "mean", "std", "NaN", "Inf"))
        return f"<div class='jxs'>{_CSS}<table><tr>{head}</tr><tr>{cells}</tr></table></div>"


def _row_chunks(shape: tuple[int, ...], itemsize: int, chunk_bytes: int) -> Iterable[Any]:
    """Index objects reading ``shape`` in runs of whole rows of about ``chunk_bytes``."""
    if not shape:
        yield ()
        return
    row = int(np.prod(shape[1:], dtype=np.int64)) * max(itemsize, 1)
    step = max(1, chunk_bytes // max(row, 1))
    for start in range(0, shape[0], step):
        yield (slice(start, min(start + step, shape[0])),)


def _as_float(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "c":
        return np.abs(x).astype(np.float64)
    return x.astype(np.float64)


def tensor_stats(reader: Any, name: str, *, chunk_bytes: int = 16 << 20) -> TensorStats:
    """Streams a tensor in chunks of rows (``reader.get_slice``) and combines running moments."""
    shape = tuple(reader.shape(name))
    dtype = reader.dtype(name)
    itemsize = dtype.itemsize
    if itemsize is None:
        from jaxsaver._errors import InvalidArgumentError

        raise InvalidArgumentError(f"tensor {name!r} has dtype {dtype.name}: statistics need a numeric tensor")
    count = finite = nans = infs = 0
    mean = m2 = 0.0
    lo = hi = None
    for index in _row_chunks(shape, itemsize, chunk_bytes):
        raw = np.asarray(reader.get_slice(name, index) if index != () else reader.get_tensor(name))
        x = _as_float(raw).reshape(-1)
        count += x.size
        ok = np.isfinite(x)
        nan = int(np.isnan(x).sum())
        nans += nan
        infs += int(x.size - ok.sum() - nan)
        v = x[ok]
        if not v.size:
            continue
        if raw.dtype.kind in "iub":
            r = raw.reshape(-1)
            cmin, cmax = r.min().item(), r.max().item()
        else:
            cmin, cmax = float(v.min()), float(v.max())
        lo = cmin if lo is None else min(lo, cmin)
        hi = cmax if hi is None else max(hi, cmax)
        n_b = v.size
        mean_b = float(v.mean())
        m2_b = float(((v - mean_b) ** 2).sum())
        total = finite + n_b
        delta = mean_b - mean
        mean += delta * n_b / total
        m2 += m2_b + delta * delta * finite * n_b / total
        finite = total
    return TensorStats(
        name=name, dtype=dtype.name, shape=shape, count=count, finite=finite, nan_count=nans,
        inf_count=infs, min=lo, max=hi, mean=mean if finite else None,
        std=math.sqrt(m2 / finite) if finite else None,
    )


# ---------------------------------------------------------------------------------- diff


@dataclass(frozen=True, slots=True, kw_only=True)
class TensorDiff:
    """One tensor present in both checkpoints."""

    name: str
    dtype_a: str
    dtype_b: str
    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    num_different: int | None = None
    """Elements that differ (NaN equals NaN); None when shapes or dtypes differ."""
    max_abs_diff: float | None = None
    """Largest ``|a - b|`` (inf where one side is NaN or infinite); None if not comparable."""

    @property
    def changed_type(self) -> bool:
        """Shape or dtype differ."""
        return self.shape_a != self.shape_b or self.dtype_a != self.dtype_b

    @property
    def equal(self) -> bool:
        return not self.changed_type and self.num_different == 0

    def describe(self) -> str:
        if self.shape_a != self.shape_b or self.dtype_a != self.dtype_b:
            return (f"{self.dtype_a} {_shape_text(self.shape_a)} -> {self.dtype_b} {_shape_text(self.shape_b)}")
        if self.num_different == 0:
            return "equal"
        extra = "" if self.max_abs_diff is None else f", max abs diff {self.max_abs_diff:.6g}"
        return f"{self.num_different} elements differ{extra}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "dtype_a": self.dtype_a, "dtype_b": self.dtype_b,
            "shape_a": list(self.shape_a), "shape_b": list(self.shape_b),
            "num_different": self.num_different, "max_abs_diff": self.max_abs_diff, "equal": self.equal,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DiffResult:
    """How checkpoint ``b`` differs from ``a``; falsy when they hold the same tensors and values."""

    a: str
    b: str
    only_in_a: tuple[TensorSummary, ...] = ()
    only_in_b: tuple[TensorSummary, ...] = ()
    common: tuple[TensorDiff, ...] = field(default=())

    @property
    def changed(self) -> tuple[TensorDiff, ...]:
        """Common tensors whose shape or dtype differ."""
        return tuple(d for d in self.common if d.changed_type)

    @property
    def different(self) -> tuple[TensorDiff, ...]:
        """Common tensors that are not equal (type changes included)."""
        return tuple(d for d in self.common if not d.equal)

    @property
    def identical(self) -> bool:
        return not self.only_in_a and not self.only_in_b and not self.different

    def __bool__(self) -> bool:
        return not self.identical

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "identical": self.identical,
            "only_in_a": [t.to_dict() for t in self.only_in_a],
            "only_in_b": [t.to_dict() for t in self.only_in_b],
            "common": [d.to_dict() for d in self.common],
        }

    def __repr__(self) -> str:
        lines = [f"diff {self.a} {self.b}: " + (
            "identical" if self.identical else
            f"{len(self.only_in_a)} only in a, {len(self.only_in_b)} only in b, "
            f"{len(self.changed)} changed shape/dtype, {len(self.different) - len(self.changed)} changed values, "
            f"{len(self.common) - len(self.different)} equal"
        )]
        for t in self.only_in_a:
            lines.append(f"- {t.name} ({t.dtype}) {_shape_text(t.shape)}")
        for t in self.only_in_b:
            lines.append(f"+ {t.name} ({t.dtype}) {_shape_text(t.shape)}")
        for d in self.different:
            lines.append(f"~ {d.name}: {d.describe()}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = []
        for t in self.only_in_a:
            rows.append(("jxs-bad", "−", t.name, f"{t.dtype} {_shape_text(t.shape)}", "only in a"))
        for t in self.only_in_b:
            rows.append(("jxs-ok", "+", t.name, f"{t.dtype} {_shape_text(t.shape)}", "only in b"))
        for d in self.common:
            cls = "" if d.equal else "jxs-bad"
            mark = "=" if d.equal else "~"
            rows.append((cls, mark, d.name, f"{d.dtype_a} {_shape_text(d.shape_a)}", d.describe()))
        body = "".join(
            f"<tr class='{c}'><td>{_e(m)}</td><td>{_e(n)}</td><td>{_e(t)}</td><td>{_e(w)}</td></tr>"
            for c, m, n, t, w in rows
        )
        summary = repr(self).splitlines()[0]
        equal = len(self.common) - len(self.different)
        return (
            f"<div class='jxs'>{_CSS}<details open><summary class='jxs-head'>{_e(summary)}</summary>"
            "<table><tr><th></th><th>name</th><th>a</th><th>difference</th></tr>"
            f"{body}<tr class='jxs-total'><td></td><td>total</td>"
            f"<td>{len(self.common)} common</td><td>{equal} equal, {len(self.different)} different, "
            f"{len(self.only_in_a) + len(self.only_in_b)} unmatched</td></tr></table></details></div>"
        )


def _compare_chunk(a: np.ndarray, b: np.ndarray) -> tuple[int, float | None]:
    if a.dtype.kind in "OSU" or b.dtype.kind in "OSU":
        if a.shape != b.shape:
            return max(a.size, b.size), None
        return int(np.count_nonzero(np.asarray(a != b))), None
    same = a == b
    if a.dtype.kind in "fc" or b.dtype.kind in "fc" or a.dtype != b.dtype:
        fa, fb = a.astype(np.complex128 if a.dtype.kind == "c" else np.float64), b.astype(
            np.complex128 if b.dtype.kind == "c" else np.float64
        )
        same = same | (np.isnan(fa) & np.isnan(fb))
        with np.errstate(invalid="ignore", over="ignore"):
            d = np.abs(fa - fb)
        d = np.where(same, 0.0, np.where(np.isnan(d), np.inf, d))
    else:
        d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    diff_count = int(same.size - np.count_nonzero(same))
    return diff_count, float(d.max()) if d.size else 0.0


def diff_readers(a: Any, b: Any, *, chunk_bytes: int = 16 << 20) -> DiffResult:
    """Compares two open readers: keys in one only, shape/dtype changes, values chunk by chunk."""
    infos_a = {t.name: t for t in a.tensor_infos()}
    infos_b = {t.name: t for t in b.tensor_infos()}
    common = []
    for name in sorted(infos_a.keys() & infos_b.keys()):
        ta, tb = infos_a[name], infos_b[name]
        d = TensorDiff(name=name, dtype_a=ta.dtype, dtype_b=tb.dtype, shape_a=ta.shape, shape_b=tb.shape)
        if not d.changed_type:
            itemsize = a.dtype(name).itemsize
            if itemsize is None:
                va, vb = np.asarray(a.get_tensor(name)), np.asarray(b.get_tensor(name))
                n, m = _compare_chunk(va, vb)
            else:
                n, m = 0, 0.0
                for index in _row_chunks(ta.shape, itemsize, chunk_bytes):
                    if index == ():
                        va, vb = np.asarray(a.get_tensor(name)), np.asarray(b.get_tensor(name))
                    else:
                        va, vb = a.get_slice(name, index), b.get_slice(name, index)
                    cn, cm = _compare_chunk(va, vb)
                    n += cn
                    m = max(m, cm)
            d = TensorDiff(
                name=name, dtype_a=ta.dtype, dtype_b=tb.dtype, shape_a=ta.shape, shape_b=tb.shape,
                num_different=n, max_abs_diff=m,
            )
        common.append(d)
    return DiffResult(
        a=str(getattr(a, "prefix", "a")),
        b=str(getattr(b, "prefix", "b")),
        only_in_a=tuple(infos_a[k] for k in sorted(infos_a.keys() - infos_b.keys())),
        only_in_b=tuple(infos_b[k] for k in sorted(infos_b.keys() - infos_a.keys())),
        common=tuple(common),
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
        extra = "<div>checkpoints: " + ", ".join(f"<code>{_e(p)}</code>" for p in checkpoints) + "</div>"
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
    """A terminal view of a ``MetaGraphDef`` written by ``Saver.export_meta_graph``."""
    return "MetaGraphDef " + tree_text(_meta_root(meta))


def meta_graph_html(meta: Any) -> str:
    """Notebook HTML for a ``MetaGraphDef``: SaverDef settings and the stored tree's leaves."""
    tags = ", ".join(meta.meta_info_def.tags)
    extra = f"<div class='jxs-muted'>tags: {_e(tags)}</div>" if tags else ""
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
    from jaxsaver import meta_graph_pb2

    formatters = shell.display_formatter.formatters
    formatters["text/html"].for_type(meta_graph_pb2.MetaGraphDef, meta_graph_html)
    formatters["text/plain"].for_type(meta_graph_pb2.MetaGraphDef, lambda meta, p, cycle: p.text(meta_graph_text(meta)))
    return True

"""Statistics and diffs of checkpoint tensors, streamed in row chunks from reader-like objects.

Works on any object with a ``CheckpointReader``-like interface (``shape``, ``dtype``,
``get_slice``, ``get_tensor``, ``tensor_infos``); nothing here opens files. The names are
re-exported by :mod:`jaxsaver.inspect`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxsaver._display import CSS, escape, shape_text

if TYPE_CHECKING:
    from jaxsaver.inspect import TensorSummary

__all__ = ["DiffResult", "TensorDiff", "TensorStats", "diff_readers", "tensor_stats"]


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
            f"{self.name} ({self.dtype}) {shape_text(self.shape)}: min {f(self.min)}, max {f(self.max)}, "
            f"mean {f(self.mean)}, std {f(self.std)}, NaN {self.nan_count}, Inf {self.inf_count}"
        )

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<td>{escape(v)}</td>"
            for v in (self.name, shape_text(self.shape), self.dtype, self.min, self.max, self.mean,
                      self.std, self.nan_count, self.inf_count)
        )
        head = "".join(f"<th>{h}</th>" for h in ("name", "shape", "dtype", "min", "max", "mean", "std", "NaN", "Inf"))
        return f"<div class='jxs'>{CSS}<table><tr>{head}</tr><tr>{cells}</tr></table></div>"


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
            return (f"{self.dtype_a} {shape_text(self.shape_a)} -> {self.dtype_b} {shape_text(self.shape_b)}")
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
            lines.append(f"- {t.name} ({t.dtype}) {shape_text(t.shape)}")
        for t in self.only_in_b:
            lines.append(f"+ {t.name} ({t.dtype}) {shape_text(t.shape)}")
        for d in self.different:
            lines.append(f"~ {d.name}: {d.describe()}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = []
        for t in self.only_in_a:
            rows.append(("jxs-bad", "−", t.name, f"{t.dtype} {shape_text(t.shape)}", "only in a"))
        for t in self.only_in_b:
            rows.append(("jxs-ok", "+", t.name, f"{t.dtype} {shape_text(t.shape)}", "only in b"))
        for d in self.common:
            cls = "" if d.equal else "jxs-bad"
            mark = "=" if d.equal else "~"
            rows.append((cls, mark, d.name, f"{d.dtype_a} {shape_text(d.shape_a)}", d.describe()))
        body = "".join(
            f"<tr class='{c}'><td>{escape(m)}</td><td>{escape(n)}</td><td>{escape(t)}</td><td>{escape(w)}</td></tr>"
            for c, m, n, t, w in rows
        )
        summary = repr(self).splitlines()[0]
        equal = len(self.common) - len(self.different)
        return (
            f"<div class='jxs'>{CSS}<details open><summary class='jxs-head'>{escape(summary)}</summary>"
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

"""Shared formatting for the inspection views: human sizes, shapes, HTML escaping and CSS."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["CSS", "escape", "human_size", "plural", "shape_text"]


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



def plural(n: int, word: str) -> str:
    """``1 tensor``, ``2 tensors``.

    Example:
        >>> plural(1, "tensor"), plural(2, "tensor")
        ('1 tensor', '2 tensors')
    """
    return f"{n} {word}" + ("" if n == 1 else "s")


def shape_text(shape: Sequence[int]) -> str:
    """A shape as ``[2,3]`` (``[]`` for a scalar)."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def escape(text: Any) -> str:
    """``str(text)`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


# The stylesheet every HTML view embeds (notebooks render each output on its own).
CSS = """<style>
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

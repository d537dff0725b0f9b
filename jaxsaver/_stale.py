"""Finds and removes what failed saves left beside a checkpoint (parts, data, ``.meta``, temp dirs).

A save that fails before its commit leaves no ``.index``, so nothing names its files; a
multi-process save can fail on any process, so process 0 sweeps them at the next commit: files of
checkpoints of the same series (``<base>`` or ``<base>-<step>``) that have no ``.index``, part
bundles and part directories of any of them, and data files of the checkpoint just committed
that its index does not use (a retried save with another part count).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from jaxsaver._store import Store

__all__ = ["series_base", "stale_names", "remove_stale"]

logger = logging.getLogger(__name__)

_DATA = re.compile(r"\.data-(\d{5})-of-(\d{5})$")


def series_base(name: str) -> str:
    """The name of a checkpoint without its ``-<step>`` suffix.

    Example:
        >>> series_base("model-100"), series_base("model")
        ('model', 'model')
    """
    return re.sub(r"-\d+$", "", name)


def stale_names(names: Iterable[str], current: str, total: int) -> list[str]:
    """Which of a directory's entry names are leftovers of failed saves of ``current``'s series.

    ``current`` is the checkpoint just committed (its basename) with ``total`` data files.

    Example:
        >>> stale_names(["m-1.index", "m-1.data-00000-of-00001", "m-2.data-00000-of-00002",
        ...              "m-2.meta", "m-2_temp", "m-3.index", "m-3.data-00002-of-00003",
        ...              "m-3.data-00000-of-00002", "other-2.data-00000-of-00001"], "m-3", 3)
        ['m-2.data-00000-of-00002', 'm-2.meta', 'm-2_temp', 'm-3.data-00000-of-00002']
    """
    names = sorted(set(names))
    checkpoint = re.compile(rf"^({re.escape(series_base(current))}(?:-\d+)?)(\..*|_temp)$")
    indexed = {m.group(1) for n in names if (m := checkpoint.match(n)) and m.group(2) == ".index"}
    out = []
    for name in names:
        m = checkpoint.match(name)
        if m is None:
            continue
        prefix, rest = m.groups()
        if rest == "_temp" or rest.startswith(".part-"):
            out.append(name)
        elif prefix not in indexed:
            if rest == ".meta" or _DATA.match(rest):
                out.append(name)
        elif prefix == current and (d := _DATA.match(rest)) and int(d.group(2)) != total:
            out.append(name)
    return out


def _remove_entry(store: Store, key: str) -> None:
    """Deletes an object, or a part directory (key prefix) and the objects in it."""
    if store.exists(key):
        store.delete(key)
        return
    for sub in store.list(key.rstrip("/") + "/"):
        store.delete(sub)
    if store.capabilities.directories:
        store.remove_dir(key)


def remove_stale(store: Store, current_key: str, total: int) -> list[str]:
    """Removes the leftovers :func:`stale_names` finds next to ``current_key``; returns them.

    Failures are logged (the checkpoint just committed stands); never raises for them.
    """
    directory, current = store.dirname(current_key), store.basename(current_key)
    base = series_base(current)
    try:
        names = store.entries(store.join(directory, base) if directory else base)
    except Exception as err:  # noqa: BLE001 - a sweep must not fail a committed save
        logger.warning("could not list %s for stale parts: %s", store.url(directory), err)
        return []
    stale = stale_names(names, current, total)
    removed = []
    for name in stale:
        key = store.join(directory, name) if directory else name
        try:
            _remove_entry(store, key)
            removed.append(name)
        except Exception as err:  # noqa: BLE001
            logger.warning("could not remove stale %s: %s", store.url(key), err)
    if removed:
        logger.info("removed leftovers of failed saves next to %s: %s", store.url(current_key), ", ".join(removed))
    return removed

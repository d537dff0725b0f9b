"""Crash-safe overwrites: a new checkpoint's data files never take the names of the live one's.

A V2 checkpoint's data files are named by its index (``prefix.data-<k>-of-<n>``, ``n`` the
header's ``num_shards``), so two checkpoints of one prefix share no file when their shard counts
differ. A save to a prefix that already holds a checkpoint with ``n`` data files therefore
writes ``n + 1`` (the last one empty): its data lands beside the old files, the index rename
switches readers from the old checkpoint to the new one in one step, and only then are the old
data files deleted. At every moment ``prefix.index`` describes files that are all there, for
jaxsaver and TensorFlow alike (TF reads an empty data file that no entry points into).

Example:
    >>> from jaxsaver._store import resolve
    >>> store, key = resolve("memory://doc_overwrite/model")
    >>> free_shard_count(store, key, 1)
    1
    >>> store.write(key + ".data-00000-of-00001", b"old")
    >>> free_shard_count(store, key, 1)
    2
"""

from __future__ import annotations

import logging
import re

from jaxsaver._store import Store

__all__ = ["data_counts", "free_shard_count", "drop_superseded_data"]

logger = logging.getLogger(__name__)

_COUNT = re.compile(r"\.data-(\d{5})-of-(\d{5})")


def data_counts(store: Store, prefix: str) -> dict[int, list[str]]:
    """The data files named for ``prefix`` exactly, grouped by their ``-of-<n>`` count."""
    found: dict[int, list[str]] = {}
    start = f"{prefix}.data-"
    for key in store.list(start):
        match = _COUNT.fullmatch(key, len(prefix))
        if match is not None and key.startswith(start):
            found.setdefault(int(match.group(2)), []).append(key)
    return found


def free_shard_count(store: Store, prefix: str, wanted: int) -> int:
    """The smallest shard count ``>= wanted`` that no data file of ``prefix`` uses yet."""
    used = data_counts(store, prefix)
    count = wanted
    while count in used:
        count += 1
    return count


def drop_superseded_data(store: Store, prefix: str, live: int) -> list[str]:
    """Deletes the data files of ``prefix`` whose count is not ``live`` (call after the commit)."""
    removed = []
    for count, keys in data_counts(store, prefix).items():
        if count == live:
            continue
        for key in keys:
            store.delete(key)
            removed.append(key)
    if removed:
        logger.debug("removed %d data file(s) of the checkpoint %s replaced", len(removed), store.url(prefix))
    return removed

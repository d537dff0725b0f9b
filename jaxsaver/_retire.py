"""Recoverable retention: a journal of the save's last stages, and deletes kept inside the directory.

A Saver's save ends with three steps that a crash can separate: the index commit, the state
file, and retention's deletes. Before the commit the save writes a small journal beside the
state file (``.<state file>.pending``, JSON of checkpoint *names* in that directory): the
checkpoint being committed (``adopt``), then, before the state file, the checkpoints retention
will delete (``delete``); it is removed once the deletes are done. The next save in that
directory reads a journal it finds: a checkpoint to adopt that exists but no state file lists
joins the retention list (it was committed and then lost), and a checkpoint to delete that the
state file no longer lists is deleted (the deletes were cut short).

Deletes remove only the exact files of one checkpoint (``P.index`` first, then
``P.data-NNNNN-of-NNNNN``, then ``P.meta``), and only of a prefix directly inside the directory
whose state file listed it: an edited state file naming ``/elsewhere/model-1``, ``../x/model-1``
or ``model-*`` makes nothing outside (or nothing else) go; such entries are logged.

Example:
    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> write_journal(directory, "checkpoint", adopt=["model-3"])
    >>> read_journal(directory, "checkpoint")
    {'adopt': ['model-3'], 'delete': []}
    >>> delete_checkpoint(os.path.join(directory, "..", "elsewhere", "model-1"), directory)
    []
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from jaxsaver._store import in_flight
from jaxsaver._errors import JaxsaverError
from jaxsaver._overwrite import data_counts
from jaxsaver._store import canonical_key, resolve

__all__ = ["delete_checkpoint", "inside", "journal_key", "read_journal", "remove_journal", "write_journal"]

logger = logging.getLogger(__name__)

# A journal lists a handful of names; anything larger is not ours.
_MAX_JOURNAL_BYTES = 1 << 20


def journal_key(directory: str, latest_filename: str) -> str:
    """The journal's path beside the state file ``latest_filename``."""
    return os.path.join(directory, f".{latest_filename}.pending")


def _names(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, str) and v and "/" not in v and os.sep not in v and v not in (".", "..")]


def write_journal(directory: str, latest_filename: str, *, adopt: Sequence[str] = (), delete: Sequence[str] = ()) -> None:
    """Writes the journal (atomically); names are checkpoint basenames in ``directory``."""
    store, key = resolve(journal_key(directory, latest_filename))
    body = {"adopt": [os.path.basename(p) for p in adopt], "delete": [os.path.basename(p) for p in delete]}
    store.write(key, json.dumps(body).encode())


def read_journal(directory: str, latest_filename: str) -> dict[str, list[str]] | None:
    """The journal's ``adopt`` and ``delete`` names, or None if there is none (or it is not one)."""
    store, key = resolve(journal_key(directory, latest_filename))
    try:
        if not store.exists(key) or store.size(key) > _MAX_JOURNAL_BYTES:
            return None
        body = json.loads(store.read(key))
    except (JaxsaverError, ValueError) as err:
        logger.warning("ignoring the retention journal %s: %s", key, err)
        return None
    if not isinstance(body, dict):
        return None
    return {"adopt": _names(body.get("adopt")), "delete": _names(body.get("delete"))}


def remove_journal(directory: str, latest_filename: str) -> None:
    store, key = resolve(journal_key(directory, latest_filename))
    store.delete(key)


def inside(prefix: Any, directory: Any) -> bool:
    """Whether checkpoint ``prefix`` lies directly in ``directory`` (same store, symlinks resolved)."""
    store, key = resolve(prefix)
    dstore, dkey = resolve(directory)
    if store is not dstore or not key:
        return False
    return os.path.dirname(canonical_key(store, key)) == canonical_key(store, dkey or ".")


def delete_checkpoint(prefix: Any, directory: Any, meta_graph_suffix: str = "meta") -> list[str]:
    """Deletes checkpoint ``prefix``'s own files if it lies directly in ``directory``.

    The index goes first (the checkpoint stops being visible), then its data files, then its
    ``.meta``. Names are matched exactly, so glob characters in ``prefix`` are literal. A prefix
    outside ``directory`` is logged and left alone.

    Returns:
        The keys deleted.
    """
    if not inside(prefix, directory):
        logger.warning(
            "not deleting checkpoint %s: it is not in the directory %s whose state file listed it",
            os.fspath(prefix), os.fspath(directory),
        )
        return []
    store, key = resolve(prefix)
    deleted = []
    with in_flight(prefix):  # a deletion cut short leaves files cleanup can prove stale
        doomed = [f"{key}.index"]
        doomed += [k for keys in data_counts(store, key).values() for k in sorted(keys)]
        doomed.append(f"{key}.{meta_graph_suffix}")
        for k in doomed:
            if store.exists(k):
                store.delete(k)
                deleted.append(k)
    return deleted

"""Crash leftovers: marks a save in flight, and removes only what is provably stale.

While a :class:`~jaxsaver.Saver` writes (or retention deletes) checkpoint ``P`` on local disk,
``P_temp/.owner-<host>-<pid>`` exists: the sharded parts live beside it, and every file of
``P`` that is not yet (or no longer) described by ``P.index`` exists only while it does.
Temporary files are named ``<file>.tempstate-<host>-<pid>-<random>``. A leftover is stale when
the process named on it is gone (same host; a process that started after the file was written
is not its owner), or, for leftovers that name no owner (TensorFlow's, other hosts'), when it is
older than ``grace_seconds``. Nothing else is touched: no file whose name is not one of these
patterns, no checkpoint whose index exists, no ``.meta`` without an owner.

Example:
    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> open(os.path.join(directory, "model.index.tempstate-otherhost-1-00"), "wb").close()
    >>> cleanup(directory)  # another host's temp file, written just now: kept
    []
    >>> with in_flight(os.path.join(directory, "model")):
    ...     sorted(os.listdir(directory))
    ['model.index.tempstate-otherhost-1-00', 'model_temp']
    >>> sorted(os.listdir(directory))
    ['model.index.tempstate-otherhost-1-00']
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

from jaxsaver._store.local import LocalStore, _os_error, temp_name
from jaxsaver._store.resolver import resolve

__all__ = ["cleanup", "in_flight", "owner_alive"]

logger = logging.getLogger(__name__)

_HOST = socket.gethostname().replace("/", "_") or "localhost"
_OWNER = re.compile(r"\.owner-(?P<host>.+)-(?P<pid>\d+)")
_TEMP = re.compile(r"(?P<target>.+)\.tempstate(?:-(?P<host>.+)-(?P<pid>\d+)-[0-9a-f]+|\d+)")
_DATA = re.compile(r"(?P<prefix>.+)\.data-\d{5}-of-(?P<count>\d{5})")
_PART = re.compile(r"part-\d{5}-of-\d{5}(?:\.index|\.data-\d{5}-of-\d{5})?")
_DEFAULT_GRACE = 3600.0


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def owner_alive(host: str, pid: int, written: float) -> bool | None:
    """Whether the process ``pid`` on ``host`` that wrote a file at time ``written`` still runs.

    None when it cannot be known (another host). A zombie, or a process that started after the
    file was written (the pid was reused), is not the writer.
    """
    if host != _HOST:
        return None
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return True
    if fields and fields[0] in (b"Z", b"X"):
        return False
    boot = _boot_time()
    if boot is not None and len(fields) > 19:
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if started > written + 2.0:
            return False
    return True


@contextlib.contextmanager
def in_flight(prefix: Any) -> Iterator[None]:
    """Marks a save (or deletion) of checkpoint ``prefix`` as in flight in this process.

    On local disk, creates ``prefix_temp/.owner-<host>-<pid>`` and removes it (and the directory,
    once empty) afterwards; elsewhere does nothing.
    """
    store, key = resolve(prefix)
    if not isinstance(store, LocalStore):
        yield
        return
    temp = f"{key}_temp"
    name = f".owner-{_HOST}-{os.getpid()}"
    marker = os.path.join(temp, name)
    # The directory appears with its marker already inside (made under a temporary name, then
    # renamed), so no ownerless <prefix>_temp is ever visible.
    staging = temp_name(temp)
    made = False
    try:
        os.mkdir(staging)
        os.close(os.open(os.path.join(staging, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        try:
            os.rename(staging, temp)
            made = True
        except OSError:  # <prefix>_temp exists: another save of this prefix is in flight
            if not os.path.exists(marker):
                os.rename(os.path.join(staging, name), marker)
                made = True
            else:
                os.unlink(os.path.join(staging, name))
            os.rmdir(staging)
    except OSError as err:
        _discard(staging)
        raise _os_error(err, marker) from None
    try:
        yield
    finally:
        if made:
            _release(temp, name)


def _release(temp: str, name: str) -> None:
    """Removes our marker; the directory, when only the marker is left, goes under a temporary
    name first, so no ownerless ``<prefix>_temp`` is ever visible."""
    try:
        if os.listdir(temp) == [name]:
            leaving = temp_name(temp)
            os.rename(temp, leaving)
            os.unlink(os.path.join(leaving, name))
            os.rmdir(leaving)
        else:
            os.unlink(os.path.join(temp, name))
            os.rmdir(temp)  # fails while another save's files are in it
    except OSError:
        pass


def _discard(directory: str) -> None:
    """Removes a directory of ours and the files in it (best effort)."""
    try:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
    except OSError:
        pass


def _mtime(path: str) -> float | None:
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return None


def _stale(host: str | None, pid: str | None, path: str, now: float, grace: float) -> bool:
    written = _mtime(path)
    if written is None:
        return False
    if host is not None and pid is not None:
        alive = owner_alive(host, int(pid), written)
        if alive is not None:
            return not alive
    return now - written > grace


def _remove(path: str, removed: list[str], dry_run: bool) -> None:
    if not dry_run:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as err:
            logger.warning("could not remove stale %s: %s", path, err)
            return
    removed.append(path)


def _temp_dir_state(path: str, now: float, grace: float) -> tuple[bool, list[str]]:
    """Whether the ``<prefix>_temp`` directory ``path`` is stale, and its files (ours only)."""
    try:
        names = os.listdir(path)
    except OSError:
        return False, []
    owners = [m for m in map(_OWNER.fullmatch, names) if m is not None]
    foreign = [n for n in names if not (_OWNER.fullmatch(n) or _PART.fullmatch(n) or _TEMP.fullmatch(n))]
    if foreign:
        logger.warning("leaving %s: it holds files jaxsaver did not write (%s)", path, ", ".join(sorted(foreign)[:3]))
        return False, []
    files = [os.path.join(path, n) for n in names]
    if owners:
        stale = all(_stale(m["host"], m["pid"], os.path.join(path, m.string), now, grace) for m in owners)
    else:
        stale = _stale(None, None, path, now, grace)
    return stale, files


def _index_count(prefix: str) -> int | None:
    """How many data files the checkpoint's index says it has (None: no readable index).

    Read from the index header with the pure table layer (the store must not import the bundle
    layer above it).
    """
    from google.protobuf.message import DecodeError

    from jaxsaver._errors import JaxsaverError
    from jaxsaver._format.table import TableReader
    from jaxsaver._proto.tensor_bundle_pb2 import BundleHeaderProto

    try:
        with open(prefix + ".index", "rb") as f:
            header = TableReader(f.read()).get(b"")
        if header is None:
            return None
        return BundleHeaderProto.FromString(header).num_shards
    except (JaxsaverError, DecodeError, OSError):
        return None


def cleanup(directory: Any, *, grace_seconds: float = _DEFAULT_GRACE, dry_run: bool = False) -> list[str]:
    """Removes the crash leftovers in a local checkpoint directory that are provably stale.

    Removed: temporary files (``*.tempstate*``), ``<prefix>_temp/`` directories of sharded
    saves, data files no index describes, and the ``.meta`` of a checkpoint whose save or
    deletion was cut short, each only once its owner process is gone (see the module
    docstring); leftovers naming no owner once older than ``grace_seconds``. A save or deletion
    in flight in any process on this host is never touched. Other stores: nothing is done.

    Args:
        directory: the directory (a local path).
        grace_seconds: the age after which a leftover that names no owner is stale.
        dry_run: only list what would be removed.

    Returns:
        The paths removed (or that would be), sorted.
    """
    store, root = resolve(directory)
    if not isinstance(store, LocalStore):
        return []
    root = root or "."
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    now = time.time()
    removed: list[str] = []
    present = set(names)
    dead_owner: set[str] = set()  # prefixes whose in-flight marker names a dead process
    live_owner: set[str] = set()
    for name in names:
        if not name.endswith("_temp"):
            continue
        path = os.path.join(root, name)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        stale, files = _temp_dir_state(path, now, grace_seconds)
        prefix = name[: -len("_temp")]
        if not stale:
            live_owner.add(prefix)
            continue
        dead_owner.add(prefix)
        for file in files:
            _remove(file, removed, dry_run)
    for name in names:
        match = _TEMP.fullmatch(name)
        if match is None:
            continue
        path = os.path.join(root, name)
        if not _stale(match["host"], match["pid"], path, now, grace_seconds):
            continue
        if os.path.isdir(path) and not os.path.islink(path):  # an in-flight marker being made
            names_in = os.listdir(path)
            if all(_OWNER.fullmatch(n) for n in names_in):
                for n in names_in:
                    _remove(os.path.join(path, n), removed, dry_run)
                if not dry_run:
                    try:
                        os.rmdir(path)
                    except OSError:
                        pass
                removed.append(path)
        elif os.path.isfile(path):
            _remove(path, removed, dry_run)
    by_prefix: dict[str, dict[int, list[str]]] = {}
    for name in names:
        match = _DATA.fullmatch(name)
        if match is not None and os.path.isfile(os.path.join(root, name)):
            by_prefix.setdefault(match["prefix"], {}).setdefault(int(match["count"]), []).append(name)
    for prefix, counts in by_prefix.items():
        if prefix in live_owner:
            continue
        has_index = f"{prefix}.index" in present
        if has_index:
            if len(counts) == 1:
                continue
            live = _index_count(os.path.join(root, prefix))
            if live is None:
                continue
            doomed = [n for count, files in counts.items() if count != live for n in files]
        else:
            doomed = [n for files in counts.values() for n in files]
        for name in doomed:
            path = os.path.join(root, name)
            if prefix in dead_owner or _stale(None, None, path, now, grace_seconds):
                _remove(path, removed, dry_run)
    for prefix in dead_owner:
        meta = f"{prefix}.meta"
        if meta in present and f"{prefix}.index" not in present:
            _remove(os.path.join(root, meta), removed, dry_run)
    if not dry_run:
        for prefix in dead_owner:
            try:
                os.rmdir(os.path.join(root, f"{prefix}_temp"))
            except OSError:
                pass
    if removed:
        logger.info("removed %d stale leftover(s) of interrupted saves in %s", len(removed), root)
    return sorted(removed)

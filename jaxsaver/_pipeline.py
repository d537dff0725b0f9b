"""The save and restore paths as module-level stages, read top to bottom.

Save::

    locate ─▶ snapshot (device → host) ─▶ plan (which bytes each part holds)
           ─▶ write parts (one bundle per device group, concurrently)
           ─▶ commit (merge the parts' in-memory entries; the ``.index`` is written last)

Restore::

    locate (a prefix or a directory) ─▶ open the index (read once) ─▶ check against the saveables
           ─▶ read (each stored slice once, concurrently) ─▶ place on devices ─▶ leaves

Every stage receives an already-resolved :class:`Location`; the prefix is resolved once per call
and part names are computed once per save. :class:`jaxsaver.SaverGraph` is the TF-style named
view (``save/save_all``, ``save/restore_all``, ``save/save_shard_<k>``, ``save/merge``) over
these functions; :class:`jaxsaver.Saver` calls them directly. The state file and retention are
the Saver's last stages (:mod:`jaxsaver.saver`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax

from jaxsaver import _numeric
from jaxsaver._bundle.merge import commit_merged
from jaxsaver._bundle.reader import BundleReader
from jaxsaver._bundle.writer import PartIndex
from jaxsaver._errors import CheckpointNotFoundError, InvalidArgumentError, NotACheckpointError
from jaxsaver._format.tensors import data_filename
from jaxsaver._overwrite import drop_superseded_data, free_shard_count
from jaxsaver._proto import types_pb2
from jaxsaver._sharding import ShardWrite, group_by_device, plan_writes, split_groups
from jaxsaver._snapshot import Snapshot, write_nbytes
from jaxsaver._store import Store, resolve
from jaxsaver.saveables import LeafKind, Saveable

if TYPE_CHECKING:
    from jaxsaver.builder import SaverBuilder

__all__ = [
    "Location",
    "SavePlan",
    "locate_for_save",
    "snapshot",
    "plan_save",
    "make_parent",
    "write_part",
    "write_parts",
    "commit",
    "write",
    "save",
    "open_checkpoint",
    "restore",
    "tensor_nbytes",
]

_MAX_THREADS = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    """A checkpoint prefix resolved once: its store, its key there, and the user's spelling."""

    #: The storage backend.
    store: Store
    #: The prefix as a key in ``store``.
    key: str
    #: The prefix as the user wrote it (returned by ``save``; a URL stays a URL).
    path: str

    @classmethod
    def of(cls, path: Any, storage: Any = None) -> Location:
        """Resolves ``path`` (a local path, URL or bytes) once."""
        store, key = resolve(path, storage)
        spelled = os.fsdecode(path) if isinstance(path, bytes) else os.fspath(path)
        return cls(store=store, key=key, path=spelled)

    @property
    def url(self) -> str:
        return self.store.url(self.key)


# ----------------------------------------------------------------------------- locate


def locate_for_save(path: Any, storage: Any = None) -> Location:
    """Resolves a save prefix and refuses prefixes that cannot name a checkpoint.

    Raises:
        InvalidArgumentError: the prefix ends in a path separator or names an existing
            directory (the files would be hidden ``dir/.index`` files that no state file finds).
        ValueError: the parent directory does not exist or is not a directory (TF's message).
    """
    location = Location.of(path, storage)
    spelled = location.path
    if spelled.endswith(("/", os.sep)) or location.store.isdir(location.key):
        raise InvalidArgumentError(
            f"save_path {spelled!r} names a directory, not a checkpoint prefix: pass a prefix "
            f"inside it, e.g. {os.path.join(spelled.rstrip('/' + os.sep), 'model')!r}"
        )
    return location


def make_parent(location: Location) -> None:
    """Makes the prefix's directory (one level, as TF's writer does) before any file is written.

    Raises:
        ValueError: (:class:`InvalidArgumentError`) it cannot be made (TF's message).
    """
    store = location.store
    try:
        store.make_dir(store.dirname(location.key))
    except (OSError, CheckpointNotFoundError) as err:
        if _parent_missing(location):
            raise InvalidArgumentError(f"Parent directory of {location.path} doesn't exist, can't save.") from err
        raise
    if _parent_missing(location):  # the "directory" is a file
        raise InvalidArgumentError(f"Parent directory of {location.path} doesn't exist, can't save.")


def _parent_missing(location: Location) -> bool:
    """Whether a failed save failed because its parent directory cannot be made or used."""
    store = location.store
    return store.capabilities.directories and not store.isdir(store.dirname(location.key) or ".")


def _checkpoints_in(store: Store, directory: str) -> list[str]:
    try:
        keys = store.list(directory.rstrip("/") + "/" if directory else "")
    except Exception:  # listing is only for the message
        return []
    return sorted(k[: -len(".index")] for k in keys if k.endswith(".index"))


def _nearest_checkpoints(store: Store, key: str) -> list[str]:
    found = _checkpoints_in(store, store.dirname(key))
    return difflib.get_close_matches(key, found, n=3, cutoff=0.0) if found else []


# ----------------------------------------------------------------------------- save stages


@dataclass(frozen=True, slots=True, kw_only=True)
class SavePlan:
    """Which bytes each part bundle of one save holds, and where the parts go (pure data)."""

    #: The checkpoint being written.
    location: Location
    #: Every entry to write (whole tensors or slices).
    writes: tuple[ShardWrite, ...]
    #: ``(device, writes)`` per part; one part for an unsharded save.
    groups: tuple[tuple[str, tuple[ShardWrite, ...]], ...]
    #: Whether the save is sharded (parts under ``<prefix>_temp/`` or ``<prefix>.part…``).
    sharded: bool
    #: Per part, its prefix (a key in the store); the checkpoint's own for an unsharded save.
    part_prefixes: tuple[str, ...]
    #: Per part, where its data object goes when not at ``part.data-00000-of-00001``.
    part_data_keys: tuple[str | None, ...]

    @property
    def temp_dir(self) -> str | None:
        """The directory holding the parts of a sharded save on a renaming store."""
        if self.sharded and self.location.store.capabilities.atomic_rename:
            return f"{self.location.key}_temp"
        return None


def snapshot(
    builder: SaverBuilder,
    saveables: Sequence[Saveable],
    values: Sequence[Any],
    location: Location,
    *,
    sharded: bool,
    mode: str | None = None,
) -> tuple[SavePlan, Snapshot]:
    """Checks the values, plans the save and holds its bytes (see :mod:`jaxsaver._snapshot`).

    Everything after this stage may run in the background: with ``mode`` ``"host"`` or
    ``"device"`` the caller may donate or overwrite its arrays once it returns.
    """
    checked = builder.snapshot(saveables, values, copy=True if mode == "device" else None)
    plan = plan_save(saveables, checked, location, sharded=sharded, sharded_filename=builder.sharded_filename)
    return plan, Snapshot(checked, plan.writes, mode=mode, owns_device_arrays=mode == "device")


def part_names(
    location: Location, num_parts: int, sharded_filename: Callable[[str, int, int], str]
) -> tuple[tuple[str, ...], tuple[str | None, ...]]:
    """The parts' prefixes and data keys of a sharded save to ``location`` (computed once)."""
    store, prefix = location.store, location.key
    temp = f"{prefix}_temp/part" if store.capabilities.atomic_rename else f"{prefix}.part"
    parts = tuple(sharded_filename(temp, k, num_parts) for k in range(num_parts))
    # Object stores cannot rename: each part's data object is written at its final merged name,
    # so the commit only writes the index (part k's data is shard k of n).
    data_keys = tuple(None if store.capabilities.atomic_rename else data_filename(prefix, k, num_parts) for k in range(num_parts))
    return parts, data_keys


def plan_save(
    saveables: Sequence[Saveable],
    host_values: Sequence[Any],
    location: Location,
    *,
    sharded: bool,
    sharded_filename: Callable[[str, int, int], str],
) -> SavePlan:
    """Plans one save: the entries, their grouping into parts, and the parts' names."""
    writes = plan_writes([s.name for s in saveables], host_values, sharded=sharded)
    groups = group_by_device(writes)
    cap = location.store.capabilities.max_object_bytes
    if sharded and cap:
        sizes = [write_nbytes(w, host_values) for _, group in groups for w in group]
        groups = split_groups(groups, sizes, cap)
    if sharded:
        prefixes, data_keys = part_names(location, len(groups), sharded_filename)
    else:
        prefixes, data_keys = (location.key,), (None,)
    return SavePlan(
        location=location,
        writes=tuple(writes),
        groups=tuple((device, tuple(group)) for device, group in groups) if sharded else (("", tuple(writes)),),
        sharded=sharded,
        part_prefixes=prefixes,
        part_data_keys=data_keys,
    )


def write_part(builder: SaverBuilder, plan: SavePlan, k: int, source: Snapshot, *, write_index: bool) -> PartIndex:
    """Writes part ``k`` of ``plan`` (its data; its index too when ``write_index``)."""
    return builder.save_op(
        plan.part_prefixes[k], plan.groups[k][1], source,
        data_path=plan.part_data_keys[k], storage=plan.location.store, write_index=write_index,
    )


def write_parts(builder: SaverBuilder, plan: SavePlan, source: Snapshot) -> list[PartIndex]:
    """Writes every part of a sharded save concurrently; returns their entries, in part order.

    No part index is written: the commit merges the entries held here.
    """
    count = len(plan.groups)
    if count == 1:
        return [write_part(builder, plan, 0, source, write_index=False)]
    with concurrent.futures.ThreadPoolExecutor(min(_MAX_THREADS, count)) as pool:
        futures = [pool.submit(write_part, builder, plan, k, source, write_index=False) for k in range(count)]
        return [future.result() for future in futures]


def commit(plan: SavePlan, parts: Sequence[PartIndex], *, num_shards: int | None = None) -> None:
    """Moves the parts' data to their merged names and writes the ``.index`` last.

    ``num_shards``: the data file count to write (see :mod:`jaxsaver._overwrite`).
    """
    store = plan.location.store
    commit_merged(store, plan.location.key, parts, num_shards=num_shards)
    if plan.temp_dir is not None:
        store.remove_dir(plan.temp_dir)


def _fresh_data_names(plan: SavePlan) -> tuple[SavePlan, int]:
    """The plan with data names no file of the prefix has yet, and its data file count.

    Read when the save is written (after the saves before it, in order), so an overwrite of a
    prefix never renames over the checkpoint that is there (:mod:`jaxsaver._overwrite`).
    """
    store, key = plan.location.store, plan.location.key
    wanted = len(plan.groups)
    count = free_shard_count(store, key, wanted)
    if count != wanted and (not plan.sharded or not store.atomic_rename):
        plan = dataclasses.replace(plan, part_data_keys=tuple(data_filename(key, k, count) for k in range(wanted)))
    return plan, count


def _discard_parts(plan: SavePlan) -> None:
    """Removes what a failed sharded save left of its parts (nothing of it stays visible)."""
    if not plan.sharded:
        return
    store = plan.location.store
    for prefix, data_key in zip(plan.part_prefixes, plan.part_data_keys):
        for key in (f"{prefix}.index", data_key or data_filename(prefix, 0, 1)):
            try:
                store.delete(key)
            except Exception:  # the save's own error is the one to raise
                pass
    if plan.temp_dir is not None:
        store.remove_dir(plan.temp_dir)


def write(builder: SaverBuilder, plan: SavePlan, source: Snapshot) -> str:
    """Everything after the snapshot: write the parts, merge, commit; returns the prefix.

    Raises:
        ValueError: (:class:`InvalidArgumentError`) the parent directory does not exist and
            cannot be made, or is not a directory (TF's message).
    """
    location = plan.location
    try:
        plan, count = _fresh_data_names(plan)
        try:
            if not plan.sharded and count == 1:
                write_part(builder, plan, 0, source, write_index=True)
            else:
                commit(plan, write_parts(builder, plan, source), num_shards=count)
        except BaseException:
            _discard_parts(plan)
            raise
        drop_superseded_data(location.store, location.key, count)
    except (OSError, CheckpointNotFoundError) as err:
        if _parent_missing(location):
            raise InvalidArgumentError(f"Parent directory of {location.path} doesn't exist, can't save.") from err
        raise
    return location.path


def save(
    builder: SaverBuilder,
    saveables: Sequence[Saveable],
    values: Sequence[Any],
    location: Location,
    *,
    sharded: bool,
) -> str:
    """The whole save path, synchronously; returns the prefix as the caller spelled it."""
    plan, source = snapshot(builder, saveables, values, location, sharded=sharded)
    return write(builder, plan, source)


# ----------------------------------------------------------------------------- restore stages


def open_checkpoint(path: Any, storage: Any = None) -> BundleReader:
    """Opens a checkpoint for restore: a prefix, or a directory (its latest checkpoint).

    The index is read once, by the reader; the directory and the nearest checkpoints are looked
    up only when no index is there, for the message.

    Raises:
        InvalidArgumentError: ``path`` is None.
        NotACheckpointError: nothing is there (TF's "not a valid checkpoint" text, naming what
            was looked for and the nearest checkpoints found).
    """
    if path is None:
        raise InvalidArgumentError("Can't load save_path when it is None.")
    location = path if isinstance(path, Location) else Location.of(path, storage)
    store = location.store
    try:
        return BundleReader(location.key, storage=store)
    except NotACheckpointError:
        raise
    except CheckpointNotFoundError:
        pass
    if store.isdir(location.key):
        from jaxsaver.checkpoint_management import latest_checkpoint

        latest = latest_checkpoint(location.path, storage=storage)
        if latest is not None:
            latest_store, latest_key = resolve(latest, storage)
            return BundleReader(latest_key, storage=latest_store)
        found = _checkpoints_in(store, location.key)
        raise NotACheckpointError(
            f"The passed save_path is not a valid checkpoint: {location.path} is a directory "
            "without a 'checkpoint' state file naming an existing checkpoint"
            + (f"; checkpoints in it: {', '.join(found[:5])}" if found else "; it holds no checkpoint")
        )
    nearest = _nearest_checkpoints(store, location.key)
    raise NotACheckpointError(
        f"The passed save_path is not a valid checkpoint: {location.path} "
        f"(looked for {location.url}.index)"
        + (f"; nearest checkpoints: {', '.join(nearest)}" if nearest else "")
    )


def tensor_nbytes(reader: BundleReader, name: str) -> int:
    """A tensor's bytes in the checkpoint (its shape times its item size; strings: 8 each)."""
    info = reader.info(name)
    if not info.is_sliced and info.dtype_code != types_pb2.DT_STRING:
        return int(info.entry.size)  # a read checks it against shape x item size
    return math.prod(info.shape) * reader.dtype(name).itemsize


def restore(
    builder: SaverBuilder,
    saveables: Sequence[Saveable],
    location: Location | Any,
    *,
    reshape: bool,
    restore_sequentially: bool,
    shardings: Sequence[Any] | None = None,
    progress: Any = None,
) -> list[Any]:
    """The whole restore path: one leaf per saveable, of its kind, placed by ``shardings``.

    ``location`` is a :class:`Location`, a prefix or a directory (see :func:`open_checkpoint`);
    ``progress`` as :meth:`jaxsaver.Saver.restore` takes it.
    """
    from jaxsaver._progress import Tracker

    targets = list(shardings) if shardings is not None else [s.sharding for s in saveables]
    reads = [t if s.kind == LeafKind.JAX_ARRAY else None for s, t in zip(saveables, targets)]
    with open_checkpoint(location) as reader:
        builder.check_compatible(reader, saveables, reshape=reshape)
        # The scalar rule (jaxsaver/_numeric.py): these are read whole and converted exactly.
        convert = {i for i, s in enumerate(saveables) if reader.dtype(s.name) != s.dtype}
        tracker = Tracker.of(
            progress, operation="restore", checkpoint=reader.store.url(reader.prefix),
            bytes_total=sum(tensor_nbytes(reader, s.name) for s in saveables), tensors_total=len(saveables),
        ) if progress else None
        try:
            data = builder.bulk_restore(
                reader, saveables, restore_sequentially=restore_sequentially, reshape=reshape,
                shardings=[None if i in convert else r for i, r in enumerate(reads)],
                **({"progress": tracker} if tracker is not None else {}),
            )
        except BaseException:
            if tracker is not None:
                tracker.close()
            raise
    for i in convert:
        data[i] = _numeric.convert_exact(saveables[i].name, data[i], saveables[i].dtype)
    leaves = builder.restore_ops(saveables, data, reads)
    if tracker is not None:
        tracker.finish()
    # A PRNG key's target sharding is that of its key data (one more dimension than the key
    # array): place the data, then wrap it (the keys follow the data's placement).
    leaves = [
        jax.device_put(leaf, t) if s.kind == LeafKind.PRNG_KEY and t is not None else leaf
        for s, leaf, t in zip(saveables, leaves, targets)
    ]
    return builder.finalize(saveables, leaves)

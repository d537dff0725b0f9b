"""``merge_bundles``: TensorFlow's ``MergeV2Checkpoints``, byte for byte."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxsaver._proto import tensor_bundle_pb2
from jaxsaver._bundle.writer import PartIndex
from jaxsaver._errors import CheckpointNotFoundError, DataLossError, InvalidArgumentError
from jaxsaver._format.names import display_key
from jaxsaver._format.table import TableBuilder, TableError, TableReader
from jaxsaver._format.tensors import HEADER_KEY, data_filename
from jaxsaver._store import resolve

__all__ = ["PartIndex", "commit_merged", "merge_bundles", "merged_index", "read_part_index"]


def _read_table(store: Any, index_key: str) -> TableReader:
    try:
        return TableReader(store.read(index_key))
    except TableError as err:
        raise DataLossError(f"{store.url(index_key)}: corrupt index: {err}") from None


def read_part_index(store: Any, prefix: str, *, data_key: str | None = None) -> PartIndex:
    """Reads and checks a part bundle's index (for parts written by other processes or ops).

    Raises:
        CheckpointNotFoundError: the part has no index.
        DataLossError: the index or an entry is corrupt.
    """
    index_key = f"{prefix}.index"
    if not store.exists(index_key):
        raise CheckpointNotFoundError(f"Prefix {store.url(prefix)} does not exist")
    table = _read_table(store, index_key)
    header = tensor_bundle_pb2.BundleHeaderProto()
    try:
        raw_header = table.get(HEADER_KEY)
        if raw_header is None:
            raise DataLossError(f"{store.url(index_key)}: no bundle header")
        header.ParseFromString(raw_header)
    except DataLossError:
        raise
    except Exception:
        raise DataLossError(f"{store.url(index_key)}: corrupt bundle header") from None
    try:
        items = list(table.items())
    except TableError as err:
        raise DataLossError(f"{store.url(index_key)}: corrupt index: {err}") from None
    entries = []
    for key, value in items:
        if key == HEADER_KEY:
            continue
        entry = tensor_bundle_pb2.BundleEntryProto()
        try:
            entry.ParseFromString(value)
        except Exception:
            raise DataLossError(f"{store.url(index_key)}: corrupt entry for {display_key(key)!r}") from None
        entries.append((key, entry))
    return PartIndex(prefix=prefix, header=header, entries=tuple(entries), data_key=data_key)


def merged_index(
    store: Any, dest: str, parts: Sequence[PartIndex], *, num_shards: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The merged ``.index`` bytes of ``parts`` and the data renames it needs (pure).

    Data files are numbered in order of first appearance; entries of a partitioned tensor spread
    over parts are joined; any other repeated key is an error.

    ``num_shards`` (at least the number of distinct data files) names the data files
    ``dest.data-k-of-<num_shards>``; the files past those the parts hold are empty (see
    :mod:`jaxsaver._overwrite`).

    Returns:
        ``(index_bytes, {part_data_key: merged_data_key})`` (keys already in place omitted).

    Raises:
        InvalidArgumentError: a key appears in two parts, or the parts' headers disagree.
    """
    entries: dict[bytes, tensor_bundle_pb2.BundleEntryProto] = {}
    shard_ids: dict[str, int] = {}
    total_shards = 0
    first = parts[0].header
    for part in parts:
        header = part.header
        if header.endianness != first.endianness:
            raise InvalidArgumentError(
                f"Endianness mismatch when merging {store.url(part.prefix)}: all inputs must share it"
            )
        if header.version.SerializeToString() != first.version.SerializeToString():
            raise InvalidArgumentError(f"Version mismatch when merging {store.url(part.prefix)}")
        total_shards += header.num_shards
        merged_ids: dict[int, int] = {}  # this part's shard id -> merged id (one name lookup per file)
        for key, original in part.entries:
            existing = entries.get(key)
            if existing is not None and not existing.slices:
                raise InvalidArgumentError(
                    f"Duplicate tensor keyed by {display_key(key)} encountered, when merging prefix: "
                    f"{store.url(part.prefix)}"
                )
            entry = tensor_bundle_pb2.BundleEntryProto()
            entry.CopyFrom(original)  # never change the caller's (or the writer's) entries
            if original.shard_id not in merged_ids:
                merged_ids[original.shard_id] = shard_ids.setdefault(part.data_key_of(original.shard_id), len(shard_ids))
            entry.shard_id = merged_ids[original.shard_id]
            if existing is None:
                entries[key] = entry
                continue
            if not entry.slices:
                raise InvalidArgumentError(
                    f"Duplicate tensor keyed by {display_key(key)} encountered, when merging prefix: "
                    f"{store.url(part.prefix)}: one entry is partitioned and the other is not"
                )
            if existing.dtype != entry.dtype or existing.shape != entry.shape:
                raise InvalidArgumentError(
                    f"Partitioned tensor {display_key(key)} has a different dtype or shape in "
                    f"{store.url(part.prefix)}"
                )
            existing.slices.extend(entry.slices)
    count = len(shard_ids) if num_shards is None else num_shards
    if count < len(shard_ids):
        raise InvalidArgumentError(f"num_shards {count} is less than the {len(shard_ids)} data files merged")
    renames = {}
    for data_key, new_id in shard_ids.items():
        target = data_filename(dest, new_id, count)
        if data_key != target:
            renames[data_key] = target
    header = tensor_bundle_pb2.BundleHeaderProto(
        num_shards=total_shards if num_shards is None else num_shards, endianness=first.endianness
    )
    if first.HasField("version"):
        header.version.CopyFrom(first.version)
    builder = TableBuilder()
    builder.add(HEADER_KEY, header.SerializeToString())
    for key in sorted(entries):
        builder.add(key, entries[key].SerializeToString())
    return builder.finish(), renames


def commit_merged(store: Any, dest: str, parts: Sequence[PartIndex], *, num_shards: int | None = None) -> None:
    """Moves the parts' data to their merged names, then commits ``dest.index`` (written last).

    ``num_shards``: see :func:`merged_index`; the extra data files are written empty. When the
    commit fails, the data files it moved or made are deleted again (they never carry the names
    of a checkpoint already there: see :mod:`jaxsaver._overwrite`).
    """
    index, renames = merged_index(store, dest, parts, num_shards=num_shards)
    made = []
    try:
        for source, target in renames.items():
            store.rename(source, target)
            made.append(target)
        for k in range(num_shards or 0):
            target = data_filename(dest, k, num_shards)
            if not store.exists(target):  # a padding shard no entry points into
                store.write(target, b"")
                made.append(target)
        store.write(f"{dest}.index", index)
    except BaseException:
        for target in made:
            try:
                store.delete(target)
            except Exception:  # the commit's own error is the one to raise
                pass
        raise
    if store.capabilities.directory_sync:
        store.sync_dir(store.dirname(dest))


def merge_bundles(
    prefixes: Sequence[Any],
    destination_prefix: Any,
    *,
    delete_old_dirs: bool = True,
    allow_missing_files: bool = False,
    storage: Any = None,
    data_paths: Sequence[Any] | None = None,
) -> None:
    """Merges single-writer bundles into one checkpoint (TF's ``MergeV2Checkpoints``).

    Inputs are walked in the order given; their data files are renamed to
    ``destination.data-<k>-of-<n>`` with ``k`` assigned in order of first appearance, the merged
    ``destination.index`` is written, and the inputs' index files are deleted. Entries of a
    partitioned tensor spread over inputs are joined; any other repeated key is an error.

    A save in one process merges the entries its writers hold in memory
    (:func:`commit_merged`); this function is for the TF-style ``merge`` op and for parts
    written by other processes.

    Args:
        prefixes: input bundle prefixes.
        destination_prefix: the merged checkpoint's prefix.
        delete_old_dirs: remove each input's directory afterwards when it differs from the
            destination's and is empty.
        allow_missing_files: skip inputs without an index (at least one must exist).
        storage: optional storage override for every path.
        data_paths: per input, where its single data file is if not at its default name (None
            entries keep the default); a data file already at its merged name is not moved.

    Raises:
        CheckpointNotFoundError: an input is missing (and ``allow_missing_files`` is False).
        InvalidArgumentError: a key appears in two inputs, or the inputs' headers disagree.
    """
    store, dest = resolve(destination_prefix, storage)
    inputs = []
    data_keys: dict[str, str] = {}
    for i, prefix in enumerate(prefixes):
        in_store, key = resolve(prefix, storage)
        if in_store is not store:
            raise InvalidArgumentError(f"cannot merge {in_store.url(key)} into {store.url(dest)}: different stores")
        inputs.append(key)
        if data_paths is not None and data_paths[i] is not None:
            data_keys[key] = resolve(data_paths[i], storage)[1]
    store.makedirs(store.dirname(dest))
    parts = []
    for prefix in inputs:
        if allow_missing_files and not store.exists(f"{prefix}.index"):
            continue
        parts.append(read_part_index(store, prefix, data_key=data_keys.get(prefix)))
    if not parts:
        raise CheckpointNotFoundError(
            "At least one prefix checkpoint file must exist, but none existed among: "
            + ", ".join(store.url(p) for p in inputs)
        )
    commit_merged(store, dest, parts)
    for part in parts:
        try:
            store.delete(f"{part.prefix}.index")
        except Exception:
            pass
    if delete_old_dirs:
        dest_dir = store.dirname(dest)
        for prefix in inputs:
            directory = store.dirname(prefix)
            if directory != dest_dir:
                store.remove_dir(directory)

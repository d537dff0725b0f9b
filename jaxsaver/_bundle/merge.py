"""``merge_bundles``: TensorFlow's ``MergeV2Checkpoints``, byte for byte."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxsaver._proto import tensor_bundle_pb2
from jaxsaver._bundle.writer import _display
from jaxsaver._errors import CheckpointNotFoundError, DataLossError, InvalidArgumentError
from jaxsaver._format.table import TableBuilder, TableError, TableReader
from jaxsaver._format.tensors import HEADER_KEY, data_filename
from jaxsaver._storage import LocalStore, resolve

__all__ = ["merge_bundles"]


def _read_table(store: Any, index_key: str) -> TableReader:
    try:
        return TableReader(store.read(index_key))
    except TableError as err:
        raise DataLossError(f"{store.url(index_key)}: corrupt index: {err}") from None


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

    entries: dict[bytes, tensor_bundle_pb2.BundleEntryProto] = {}
    shard_ids: dict[str, int] = {}
    total_shards = 0
    first_header: tensor_bundle_pb2.BundleHeaderProto | None = None
    present = []
    for prefix in inputs:
        index_key = f"{prefix}.index"
        if not store.exists(index_key):
            if allow_missing_files:
                continue
            raise CheckpointNotFoundError(f"Prefix {store.url(prefix)} does not exist")
        present.append(prefix)
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
        if first_header is None:
            first_header = header
        else:
            if header.endianness != first_header.endianness:
                raise InvalidArgumentError(
                    f"Endianness mismatch when merging {store.url(prefix)}: all inputs must share it"
                )
            if header.version.SerializeToString() != first_header.version.SerializeToString():
                raise InvalidArgumentError(f"Version mismatch when merging {store.url(prefix)}")
        total_shards += header.num_shards
        try:
            items = list(table.items())
        except TableError as err:
            raise DataLossError(f"{store.url(index_key)}: corrupt index: {err}") from None
        for key, value in items:
            if key == HEADER_KEY:
                continue
            entry = tensor_bundle_pb2.BundleEntryProto()
            try:
                entry.ParseFromString(value)
            except Exception:
                raise DataLossError(f"{store.url(index_key)}: corrupt entry for {_display(key)!r}") from None
            existing = entries.get(key)
            if existing is not None and not existing.slices:
                raise InvalidArgumentError(
                    f"Duplicate tensor keyed by {_display(key)} encountered, when merging prefix: "
                    f"{store.url(prefix)}"
                )
            data_key = data_filename(prefix, entry.shard_id, header.num_shards)
            if prefix in data_keys and header.num_shards == 1:
                data_key = data_keys[prefix]
            entry.shard_id = shard_ids.setdefault(data_key, len(shard_ids))
            if existing is None:
                entries[key] = entry
                continue
            if not entry.slices:
                raise InvalidArgumentError(
                    f"Duplicate tensor keyed by {_display(key)} encountered, when merging prefix: "
                    f"{store.url(prefix)}: one entry is partitioned and the other is not"
                )
            if existing.dtype != entry.dtype or existing.shape != entry.shape:
                raise InvalidArgumentError(
                    f"Partitioned tensor {_display(key)} has a different dtype or shape in "
                    f"{store.url(prefix)}"
                )
            existing.slices.extend(entry.slices)
    if first_header is None:
        raise CheckpointNotFoundError(
            "At least one prefix checkpoint file must exist, but none existed among: "
            + ", ".join(store.url(p) for p in inputs)
        )

    for data_key, new_id in shard_ids.items():
        target = data_filename(dest, new_id, len(shard_ids))
        if data_key != target:
            store.rename(data_key, target)

    header = tensor_bundle_pb2.BundleHeaderProto(num_shards=total_shards, endianness=first_header.endianness)
    if first_header.HasField("version"):
        header.version.CopyFrom(first_header.version)
    builder = TableBuilder()
    builder.add(HEADER_KEY, header.SerializeToString())
    for key in sorted(entries):
        builder.add(key, entries[key].SerializeToString())
    store.write(f"{dest}.index", builder.finish())
    if isinstance(store, LocalStore):
        store.fsync_dir(store.dirname(dest))

    for prefix in present:
        try:
            store.delete(f"{prefix}.index")
        except Exception:
            pass
    if delete_old_dirs:
        dest_dir = store.dirname(dest)
        for prefix in inputs:
            directory = store.dirname(prefix)
            if directory != dest_dir:
                store.remove_dir(directory)

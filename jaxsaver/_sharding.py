"""Which bytes each device writes, and which stored slices each restored shard reads (pure).

A ``jax.Array`` is split into its addressable shards; only shards with ``replica_id == 0`` are
written, so every byte is written once, by the process that owns that shard. Shards become slice
entries of their full tensor (TensorFlow's partitioned variables); an array held whole by one
device is a plain entry. Writes are grouped per device, devices ordered by a canonical name the
way TensorFlow sorts device strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jaxsaver._errors import InvalidArgumentError
from jaxsaver._format.slices import Extent, intersect_resolved

__all__ = [
    "ShardWrite", "SliceRead", "device_name", "plan_writes", "group_by_device", "owned_devices", "split_groups",
    "HOST_DEVICE",
    "unique_indices",
    "plan_reads", "scatter_runs",
]

#: The group of values that live on the host (numpy arrays, Python scalars).
HOST_DEVICE = "/job:localhost/replica:0/task:0/device:CPU:0"


def device_name(device: Any) -> str:
    """A TensorFlow-style canonical device string for a JAX device.

    Example:
        >>> import jax
        >>> device_name(jax.devices("cpu")[0])
        '/job:localhost/replica:0/task:0/device:CPU:0'
    """
    return f"/job:localhost/replica:0/task:{device.process_index}/device:{device.platform.upper()}:{device.id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ShardWrite:
    """One entry to write: a whole tensor or one slice of it."""

    #: Index of the value in the saver's flat list of values.
    value_index: int
    #: Checkpoint name of the tensor.
    name: str
    #: Shape of the whole tensor.
    full_shape: tuple[int, ...]
    #: The slice this entry holds (resolved extents), or None for the whole tensor.
    extents: tuple[Extent, ...] | None
    #: Canonical name of the device the bytes are on.
    device: str
    #: Position of the shard in ``array.addressable_shards`` (None: the value itself).
    shard: int | None


def _extents_from_index(index: tuple[slice, ...], shape: Sequence[int]) -> tuple[Extent, ...]:
    out = []
    for sl, dim in zip(index, shape):
        start, stop, _ = sl.indices(dim)
        out.append((start, stop - start))
    return tuple(out)


def plan_writes(names: Sequence[str], values: Sequence[Any], *, sharded: bool) -> list[ShardWrite]:
    """The entries to write for ``values`` (host arrays or ``jax.Array`` snapshots).

    With ``sharded=False`` every tensor is written whole (gathered to the host); with
    ``sharded=True`` each replica-0 shard of a multi-device array is its own slice entry.
    """
    writes = []
    for i, (name, value) in enumerate(zip(names, values)):
        shape = tuple(int(d) for d in np.shape(value))
        if not isinstance(value, jax.Array):
            writes.append(ShardWrite(value_index=i, name=name, full_shape=shape, extents=None,
                                     device=HOST_DEVICE, shard=None))
            continue
        if not sharded and len(value.sharding.device_set) == 1:  # skips building addressable_shards
            writes.append(ShardWrite(value_index=i, name=name, full_shape=shape, extents=None,
                                     device=device_name(next(iter(value.sharding.device_set))), shard=None))
            continue
        shards = value.addressable_shards
        if not sharded:
            device = device_name(shards[0].device) if shards else HOST_DEVICE
            writes.append(ShardWrite(value_index=i, name=name, full_shape=shape, extents=None,
                                     device=device, shard=None))
            continue
        for k, shard in enumerate(shards):
            if shard.replica_id != 0:
                continue
            extents = _extents_from_index(shard.index, shape)
            whole = all(start == 0 and length == dim for (start, length), dim in zip(extents, shape))
            writes.append(ShardWrite(
                value_index=i, name=name, full_shape=shape,
                extents=None if whole else extents,
                device=device_name(shard.device), shard=k,
            ))
    return writes


def owned_devices(shardings: Sequence[Any], shapes: Sequence[tuple[int, ...]]) -> list[str]:
    """The devices, sorted by name, that own data under ``shardings`` (None: a host value).

    A device owns a block when it is the first device holding that block in the sharding's
    device order, which is the shard jax numbers ``replica_id == 0``. Computed from the sharding
    alone, over every process's devices, so all processes agree on the parts of a sharded save.
    """
    owners = set()
    for sharding, shape in zip(shardings, shapes):
        if sharding is None:
            owners.add(HOST_DEVICE)
            continue
        seen = set()
        for device, index in sharding.devices_indices_map(tuple(shape)).items():
            block = _extents_from_index(index, shape) if index is not None else None
            if block not in seen:
                seen.add(block)
                owners.add(device_name(device))
    return sorted(owners)


def group_by_device(writes: Sequence[ShardWrite]) -> list[tuple[str, list[ShardWrite]]]:
    """Writes grouped per device, devices sorted by name (TF's ``_GroupByDevices``)."""
    groups: dict[str, list[ShardWrite]] = {}
    for write in writes:
        groups.setdefault(write.device, []).append(write)
    return sorted(groups.items(), key=lambda item: item[0])


def split_groups(
    groups: Sequence[tuple[str, list[ShardWrite]]], sizes: Sequence[int], cap: int | None
) -> list[tuple[str, list[ShardWrite]]]:
    """Splits each device's writes into consecutive runs of at most ``cap`` bytes.

    ``sizes[i]`` is the byte size of ``writes`` number ``i`` in group order. A single write larger
    than ``cap`` gets a part of its own (the store then reports it). Object stores cap object
    sizes (S3 without multipart upload: 5 GiB), so a large device group becomes several parts,
    which the merge joins like any others.

    Example:
        >>> w = [ShardWrite(value_index=i, name=str(i), full_shape=(), extents=None, device="d", shard=None)
        ...      for i in range(3)]
        >>> [[x.name for x in ws] for _, ws in split_groups([("d", w)], [4, 4, 4], cap=8)]
        [['0', '1'], ['2']]
    """
    if not cap:
        return list(groups)
    out = []
    position = 0
    for device, writes in groups:
        current: list[ShardWrite] = []
        total = 0
        for write in writes:
            size = sizes[position]
            position += 1
            if current and total + size > cap:
                out.append((device, current))
                current, total = [], 0
            current.append(write)
            total += size
        if current:
            out.append((device, current))
    return out


def unique_indices(sharding: Any, shape: tuple[int, ...]) -> list[tuple[tuple[Extent, ...], list[Any]]]:
    """The distinct blocks a sharding places on this process's devices, with their devices."""
    blocks: dict[tuple[Extent, ...], list[Any]] = {}
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        extents = _extents_from_index(index, shape) if index is not None else tuple((0, d) for d in shape)
        blocks.setdefault(extents, []).append(device)
    return list(blocks.items())


# ----------------------------------------------------------------------------- restore plan


@dataclass(frozen=True, slots=True, kw_only=True)
class SliceRead:
    """One stored slice (or an unsliced tensor) and the target blocks it feeds."""

    #: The stored slice's extents as written in its key (None: the unsliced tensor itself).
    key_extents: tuple[Extent, ...] | None
    #: The stored slice's resolved extents in the full tensor.
    stored: tuple[Extent, ...]
    #: ``(block index, overlap extents)`` for every target block it intersects.
    pieces: tuple[tuple[int, tuple[Extent, ...]], ...]
    #: True when the pieces cover the whole stored slice (it is read once, whole).
    complete: bool


def _count(extents: Sequence[Extent]) -> int:
    n = 1
    for _, length in extents:
        n *= length
    return n


def plan_reads(
    name: str,
    stored: Sequence[tuple[tuple[Extent, ...] | None, tuple[Extent, ...]]],
    blocks: Sequence[tuple[Extent, ...]],
) -> list[SliceRead]:
    """Which stored slices each target block reads from (TF's slice reassembly, planned once).

    Args:
        name: the tensor's name (for messages).
        stored: ``(key extents or None, resolved extents)`` of every stored slice.
        blocks: resolved extents of the distinct target blocks.

    Raises:
        ValueError: a block is not exactly covered by the stored slices (missing or
            overlapping slices).
    """
    covered = [0] * len(blocks)
    reads = []
    for key_extents, extents in stored:
        pieces = []
        for b, block in enumerate(blocks):
            overlap = intersect_resolved(extents, block)
            if overlap is not None:
                pieces.append((b, overlap))
                covered[b] += _count(overlap)
        if pieces:
            used = sum(_count(o) for _, o in pieces)
            reads.append(SliceRead(key_extents=key_extents, stored=tuple(extents), pieces=tuple(pieces),
                                   complete=used == _count(extents)))
    bad = [blocks[b] for b in range(len(blocks)) if covered[b] != _count(blocks[b])]
    if bad:
        raise InvalidArgumentError(
            f"tensor {name!r}: the stored slices do not cover target block(s) "
            + ", ".join(str(list(e)) for e in bad[:8])
            + " exactly (Does not have sufficient slices, or overlapping slices)"
        )
    return reads


def scatter_runs(
    itemsize: int, read: SliceRead, blocks: Sequence[tuple[Extent, ...]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The stored slice's bytes as contiguous runs in file order, each mapped into a block.

    Only for a ``complete`` read: the runs tile the stored slice's bytes exactly, so one ranged
    read of the whole slice can be scattered (``preadv``) straight into the target blocks.

    Returns:
        ``(file_offsets, block_indices, block_offsets, lengths)`` in bytes, sorted by file offset;
        file offsets are relative to the stored slice's first byte.
    """
    stored = read.stored
    rank = len(stored)
    k = rank
    while k > 0 and all(
        overlap[k - 1] == stored[k - 1] == blocks[b][k - 1] for b, overlap in read.pieces
    ):
        k -= 1
    s_shape = [n for _, n in stored]
    s_strides = [itemsize] * rank
    for axis in range(rank - 2, -1, -1):
        s_strides[axis] = s_strides[axis + 1] * s_shape[axis + 1]
    if k == 0:
        total = _count(stored) * itemsize
        (b, _), = read.pieces
        return (np.zeros(1, np.int64), np.array([b], np.int64), np.zeros(1, np.int64),
                np.array([total], np.int64))
    j = k - 1
    file_offs, block_ids, block_offs, lengths = [], [], [], []
    for b, overlap in read.pieces:
        block = blocks[b]
        b_shape = [n for _, n in block]
        b_strides = [itemsize] * rank
        for axis in range(rank - 2, -1, -1):
            b_strides[axis] = b_strides[axis + 1] * b_shape[axis + 1]
        f = np.zeros(1, np.int64) + (overlap[j][0] - stored[j][0]) * s_strides[j]
        o = np.zeros(1, np.int64) + (overlap[j][0] - block[j][0]) * b_strides[j]
        for axis in range(j):
            start, length = overlap[axis]
            idx = np.arange(start, start + length, dtype=np.int64)
            f = (f[:, None] + ((idx - stored[axis][0]) * s_strides[axis])[None, :]).reshape(-1)
            o = (o[:, None] + ((idx - block[axis][0]) * b_strides[axis])[None, :]).reshape(-1)
        file_offs.append(f)
        block_offs.append(o)
        block_ids.append(np.full(f.shape, b, np.int64))
        lengths.append(np.full(f.shape, overlap[j][1] * s_strides[j], np.int64))
    file_off = np.concatenate(file_offs)
    order = np.argsort(file_off, kind="stable")
    return (file_off[order], np.concatenate(block_ids)[order], np.concatenate(block_offs)[order],
            np.concatenate(lengths)[order])

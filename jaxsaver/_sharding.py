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

from jaxsaver._format.slices import Extent

__all__ = ["ShardWrite", "device_name", "plan_writes", "group_by_device", "HOST_DEVICE", "unique_indices"]

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


def group_by_device(writes: Sequence[ShardWrite]) -> list[tuple[str, list[ShardWrite]]]:
    """Writes grouped per device, devices sorted by name (TF's ``_GroupByDevices``)."""
    groups: dict[str, list[ShardWrite]] = {}
    for write in writes:
        groups.setdefault(write.device, []).append(write)
    return sorted(groups.items(), key=lambda item: item[0])


def unique_indices(sharding: Any, shape: tuple[int, ...]) -> list[tuple[tuple[Extent, ...], list[Any]]]:
    """The distinct blocks a sharding places on this process's devices, with their devices."""
    blocks: dict[tuple[Extent, ...], list[Any]] = {}
    for device, index in sharding.addressable_devices_indices_map(shape).items():
        extents = _extents_from_index(index, shape) if index is not None else tuple((0, d) for d in shape)
        blocks.setdefault(extents, []).append(device)
    return list(blocks.items())

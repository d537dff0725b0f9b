"""``SaverBuilder``: saveables -> a small graph of named save/restore functions and a SaverDef.

The graph mirrors TensorFlow's: ``<scope>/Const:0`` is the filename placeholder (a default
that every call may override, like ``placeholder_with_default``), ``<scope>/save_all`` writes
the values and returns the prefix, ``<scope>/restore_all`` reads them back, and a sharded saver
adds ``<scope>/save_shard_<k>`` per device owning data (TF's per-device save ops, writing
``<prefix>_temp/part-<k>-of-<n>``) and ``<scope>/merge`` (``MergeV2Checkpoints``); ``save_all``
runs the device parts concurrently, then the merge. Device-side work before the host transfer
(PRNG key data; with ``copy_snapshot`` a device copy of every array) is ``jax.jit``-compiled
once per saver and reused by every call, whatever the filename.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from jaxsaver import _pipeline
from jaxsaver._bundle.merge import merge_bundles
from jaxsaver._bundle.reader import BundleReader
from jaxsaver._bundle.writer import BundleWriter, PartIndex
from jaxsaver._errors import InvalidArgumentError, NotFoundError
from jaxsaver import _numeric
from jaxsaver._format import dtypes as _dtypes
from jaxsaver._sharded_read import BlockReads, aligned_empty
from jaxsaver._snapshot import Snapshot
from jaxsaver._options import SaverOptions
from jaxsaver._progress import Tracker
from jaxsaver._proto import saver_pb2
from jaxsaver._sharding import ShardWrite, owned_devices, unique_indices
from jaxsaver.saveables import LeafKind, Saveable

__all__ = ["SaverBuilder", "SaverGraph", "FilenamePlaceholder", "sharded_filename"]

logger = logging.getLogger(__name__)

_MAX_THREADS = 8


def sharded_filename(basename: str, shard: int, num_shards: int) -> str:
    """TF's ``ShardedFilename``: ``basename-00003-of-00012``."""
    return f"{basename}-{shard:05d}-of-{num_shards:05d}"


class FilenamePlaceholder:
    """``placeholder_with_default`` for the checkpoint prefix: a default any call may override.

    Example:
        >>> name = FilenamePlaceholder("model")
        >>> name(), name("other")
        ('model', 'other')
    """

    def __init__(self, default: str) -> None:
        self.default = default

    def __call__(self, value: Any = None) -> str:
        return self.default if value is None else _as_path(value)


def _as_path(value: Any) -> str:
    import os

    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, bytes):
        return value.decode()
    raise InvalidArgumentError(f"a checkpoint filename must be a string, got {type(value).__name__}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SaverGraph:
    """The named functions of one saver (TF's save/restore subgraph)."""

    #: Name scope of every op, e.g. ``"save"``.
    scope: str
    #: Op name -> callable. ``<scope>/Const:0`` is a :class:`FilenamePlaceholder`.
    ops: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def op(self, name: str) -> Callable[..., Any]:
        """The op called ``name`` (with or without the ``:0`` output suffix)."""
        op = self.ops.get(name) or self.ops.get(name.split(":")[0]) or self.ops.get(name + ":0")
        if op is None:
            raise NotFoundError(f"op {name!r} is not in saver graph {self.scope!r}: {sorted(self.ops)}")
        return op

    def run(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.op(name)(*args, **kwargs)

    @property
    def filename(self) -> FilenamePlaceholder:
        return self.ops[f"{self.scope}/Const:0"]


def _snapshot(leaves: tuple[Any, ...], copy: bool) -> tuple[Any, ...]:
    """The arrays to transfer: PRNG keys as their key data; with ``copy``, fresh device copies.

    Without ``copy`` only PRNG keys are passed in (see ``SaverBuilder.snapshot``): ``jax.jit``
    does not forward an untouched input, so passing the other arrays would copy them.
    """
    out = []
    for x in leaves:
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            out.append(jax.random.key_data(x))
        else:
            out.append(x.copy() if copy else x)
    return tuple(out)


class SaverBuilder:
    """Builds a :class:`SaverGraph` and its ``SaverDef``; subclass to override any op.

    Overridable like TF's ``BaseSaverBuilder``: :meth:`save_op` writes one bundle,
    :meth:`bulk_restore` reads tensors, :meth:`restore_op` turns them into leaves,
    :meth:`sharded_filename` names the per-device parts.
    """

    def __init__(self, *, copy_snapshot: bool = False) -> None:
        """Args:
            copy_snapshot: copy every array on its devices before the host transfer, so the
                caller may donate or overwrite the originals while the save is in flight. A
                synchronous save returns only once its bytes are written, so it needs no copy;
                the copy costs one more device buffer per array and per replica.
        """
        self._copy_snapshot = copy_snapshot
        # Function objects of their own per builder: jax shares the compilation cache of one
        # function object across every ``jax.jit`` of it, so ``jax.jit(_snapshot)`` would make
        # ``_cache_size()`` count the compilations of every saver in the process.
        def snapshot(leaves: tuple[Any, ...]) -> tuple[Any, ...]:
            return _snapshot(leaves, copy_snapshot)

        def device_copy(leaves: tuple[Any, ...]) -> tuple[Any, ...]:
            return _snapshot(leaves, True)

        self._snapshot_fn = jax.jit(snapshot)
        self._device_copy_fn = jax.jit(device_copy)
        self._finalize_fns: dict[tuple, Callable] = {}

    @property
    def snapshot_fn(self) -> Any:
        """The jitted snapshot (its ``_cache_size()`` counts compilations)."""
        return self._snapshot_fn

    # ------------------------------------------------------------------ overridable ops

    def sharded_filename(self, filename_tensor: str, shard: int, num_shards: int) -> str:
        return sharded_filename(filename_tensor, shard, num_shards)

    def save_op(
        self, filename: str, writes: Sequence[ShardWrite], source: Snapshot, *,
        data_path: Any = None, storage: Any = None, write_index: bool = True,
    ) -> PartIndex:
        """Writes ``writes`` into one bundle at ``filename`` (its data at ``data_path`` if given).

        Each write's bytes come from ``source`` (host copies, or device arrays fetched through
        its bounded window). Returns the bundle's entries; without ``write_index`` only its
        data is committed (a part of a save that is merged in this process).
        """
        writer = BundleWriter(filename, data_path=data_path, storage=storage)
        try:
            for write in writes:
                with source.hold(write) as array:
                    if write.extents is None:
                        writer.add(write.name, array)
                    else:
                        writer.add_slice(write.name, write.full_shape, write.extents, array)
        except BaseException:
            writer.abort()
            raise
        return writer.finish(write_index=write_index)

    def bulk_restore(
        self, reader: BundleReader, saveables: Sequence[Saveable], *, restore_sequentially: bool,
        reshape: bool, shardings: Sequence[Any], progress: Tracker | None = None,
    ) -> list[Any]:
        """Reads every saveable's tensor (or, for sharded targets, each addressable block).

        For a sharded target each distinct addressable block (replicas share one) is filled from
        the stored slices that intersect it; every stored slice is read at most once, straight
        into the blocks, and the reads of all tensors run concurrently (one task per stored
        slice; small reads batched into tasks of about ``_BATCH_BYTES``, so that many small
        tensors do not pay a thread hand-off each). A target on a single device is read whole.
        Returns, per saveable, a numpy array or ``[(extents, devices, block), ...]``.

        Args:
            progress: counts each tensor's bytes as it is read and checked.
        """
        plans: dict[int, BlockReads] = {}
        tasks: list[tuple[int, Callable[[], None]]] = []  # (bytes, task)
        whole: list[int] = []
        for i, (saveable, sharding) in enumerate(zip(saveables, shardings)):
            if (
                sharding is not None
                and len(sharding.device_set) > 1
                and reader.shape(saveable.name) == saveable.shape
            ):
                blocks = unique_indices(sharding, saveable.shape)
                plan = plans[i] = BlockReads(
                    reader, saveable.name, [extents for extents, _ in blocks], [devices for _, devices in blocks]
                )
                plan_tasks = plan.tasks()
                nbytes = sum(out.nbytes for out in plan.outs)
                for k, task in enumerate(plan_tasks):
                    share = nbytes // len(plan_tasks) + (nbytes % len(plan_tasks) if k == 0 else 0)
                    tasks.append((share, task))
            else:
                whole.append(i)
        results: dict[int, Any] = {}

        def read_whole(i: int) -> None:
            name = saveables[i].name
            if saveables[i].kind in (LeafKind.JAX_ARRAY, LeafKind.PRNG_KEY):
                # Into a page-aligned buffer: device_put onto a CPU device then adopts it (no copy).
                array = reader.read_into(name, aligned_empty(reader.shape(name), reader.dtype(name)))
            else:
                array = reader.get_tensor(name)
            if reshape and array.shape != saveables[i].shape:
                array = array.reshape(saveables[i].shape)
            results[i] = array

        tasks.extend((_pipeline.tensor_nbytes(reader, saveables[i].name), lambda i=i: read_whole(i)) for i in whole)
        if progress is not None:
            tasks = _counted(tasks, plans, progress)
        if restore_sequentially or len(tasks) < 2:
            for _, task in tasks:
                task()
        else:
            batches = _batches(tasks)
            with concurrent.futures.ThreadPoolExecutor(min(_MAX_THREADS, len(batches))) as pool:
                for future in [pool.submit(_run_all, batch) for batch in batches]:
                    future.result()
        for i, plan in plans.items():
            results[i] = list(zip(plan.blocks, plan.devices, plan.outs))
        return [results[i] for i in range(len(saveables))]

    def restore_op(self, saveable: Saveable, data: Any, sharding: Any) -> Any:
        """Turns what :meth:`bulk_restore` read into a leaf of the saveable's kind."""
        if isinstance(data, list):
            blocks, devices = [], []
            for _, block_devices, block in data:
                for device in block_devices:
                    blocks.append(block)
                    devices.append(device)
            arrays = jax.device_put(blocks, devices)
            return saveable.device_leaf(jax.make_array_from_single_device_arrays(saveable.shape, sharding, arrays))
        if saveable.kind == LeafKind.JAX_ARRAY:
            return saveable.device_leaf(jax.device_put(data, sharding) if sharding is not None else jax.device_put(data))
        if saveable.kind == LeafKind.PRNG_KEY:
            return jax.device_put(data)  # key data; wrapped into typed keys by finalize
        return saveable.from_host(data)

    def restore_ops(self, saveables: Sequence[Saveable], data: Sequence[Any], shardings: Sequence[Any]) -> list[Any]:
        """:meth:`restore_op` for every saveable; whole host arrays of JAX leaves are placed with
        one batched ``jax.device_put`` (per-call dispatch dominates restores of many small
        tensors). A subclass that overrides :meth:`restore_op` gets it called for every leaf."""
        if type(self).restore_op is not SaverBuilder.restore_op:
            return [self.restore_op(s, d, t) for s, d, t in zip(saveables, data, shardings)]
        out: list[Any] = [None] * len(saveables)
        batched: dict[bool, list[int]] = {True: [], False: []}
        blocks: list[np.ndarray] = []
        devices: list[Any] = []
        block_leaves: list[tuple[int, int]] = []  # (position, number of blocks)
        for i, (saveable, value, sharding) in enumerate(zip(saveables, data, shardings)):
            if saveable.kind == LeafKind.JAX_ARRAY and isinstance(value, np.ndarray):
                batched[sharding is not None].append(i)
            elif saveable.kind == LeafKind.JAX_ARRAY and isinstance(value, list):
                count = 0
                for _, block_devices, block in value:
                    for device in block_devices:
                        blocks.append(block)
                        devices.append(device)
                        count += 1
                block_leaves.append((i, count))
            else:
                out[i] = self.restore_op(saveable, value, sharding)
        if blocks:  # every addressable block of every sharded leaf in one call
            arrays = jax.device_put(blocks, devices)
            start = 0
            for i, count in block_leaves:
                out[i] = saveables[i].device_leaf(jax.make_array_from_single_device_arrays(
                    saveables[i].shape, shardings[i], arrays[start : start + count]
                ))
                start += count
        for placed, positions in batched.items():
            if not positions:
                continue
            values = [data[i] for i in positions]
            arrays = jax.device_put(values, [shardings[i] for i in positions]) if placed else jax.device_put(values)
            for i, array in zip(positions, arrays):
                out[i] = saveables[i].device_leaf(array)
        return out

    # ------------------------------------------------------------------ build

    def build(
        self, saveables: Sequence[Saveable], options: SaverOptions | None = None, **overrides: Any
    ) -> tuple[SaverGraph, saver_pb2.SaverDef]:
        """Builds the graph for ``saveables``; returns it with its ``SaverDef``.

        Args:
            saveables: what the graph saves and restores.
            options: the saver's settings (defaults: ``SaverOptions()``).
            **overrides: fields of :class:`SaverOptions` to change, e.g. ``sharded=True``.
        """
        options = dataclasses.replace(options or SaverOptions(), **overrides)
        scope = options.scope
        reshape, sharded = options.reshape, options.sharded
        restore_sequentially = options.restore_sequentially
        filename = options.filename or "model"
        saveables = tuple(saveables)
        placeholder = FilenamePlaceholder(filename or "model")
        graph = SaverGraph(scope=scope)
        # The devices holding the template's data name the per-device parts of a sharded save.
        devices = owned_devices(
            [s.specs[0].sharding if s.kind in (LeafKind.JAX_ARRAY, LeafKind.PRNG_KEY) else None for s in saveables],
            [s.shape for s in saveables],
        ) if sharded else []
        builder = self

        def merge(filename: Any = None, num_parts: int | None = None) -> str:
            """TF's ``MergeV2Checkpoints`` over the parts the ``save_shard_<k>`` ops wrote."""
            location = _pipeline.Location.of(placeholder(filename))
            parts, data_keys = _pipeline.part_names(location, num_parts or len(devices), builder.sharded_filename)
            merge_bundles(parts, location.key, delete_old_dirs=True, data_paths=data_keys, storage=location.store)
            return location.path

        def save_all(values: Sequence[Any], filename: Any = None) -> str:
            location = _pipeline.Location.of(placeholder(filename))
            return _pipeline.save(builder, saveables, values, location, sharded=sharded)

        def save_shard_op(k: int) -> Callable[..., str]:
            def save_shard(values: Sequence[Any], filename: Any = None) -> str:
                """Writes the part of device ``k`` (TF's per-device save op); returns its prefix."""
                location = _pipeline.Location.of(placeholder(filename))
                plan, source = _pipeline.snapshot(builder, saveables, values, location, sharded=True)
                found = [device for device, _ in plan.groups]
                if found != devices:
                    raise InvalidArgumentError(
                        f"{scope}/save_shard_{k}: the values live on devices {found}, the saver was "
                        f"built for {devices}; use {scope}/save_all"
                    )
                _pipeline.write_part(builder, plan, k, source, write_index=True)
                return location.store.url(plan.part_prefixes[k]) if "://" in location.path else plan.part_prefixes[k]

            return save_shard

        def restore_all(filename: Any = None, shardings: Sequence[Any] | None = None) -> list[Any]:
            return _pipeline.restore(
                builder, saveables, placeholder(filename),
                reshape=reshape, restore_sequentially=restore_sequentially, shardings=shardings,
            )

        graph.ops[f"{scope}/Const:0"] = placeholder
        if sharded:
            for k in range(len(devices)):
                graph.ops[f"{scope}/save_shard_{k}"] = save_shard_op(k)
            graph.ops[f"{scope}/merge"] = merge
        graph.ops[f"{scope}/save_all"] = save_all
        graph.ops[f"{scope}/restore_all"] = restore_all
        saver_def = saver_pb2.SaverDef(
            filename_tensor_name=f"{scope}/Const:0",
            save_tensor_name=f"{scope}/save_all:0",
            restore_op_name=f"{scope}/restore_all",
            max_to_keep=options.max_to_keep or 0,
            sharded=sharded,
            keep_checkpoint_every_n_hours=options.keep_checkpoint_every_n_hours,
            version=saver_pb2.SaverDef.V2,
        )
        return graph, saver_def

    # ------------------------------------------------------------------ helpers

    def snapshot(self, saveables: Sequence[Saveable], values: Sequence[Any], *, copy: bool | None = None) -> list[Any]:
        """Checked values: host arrays for numpy/Python leaves, device arrays for JAX leaves.

        Args:
            copy: copy every device array on its devices (one jitted call per device set);
                default: the builder's ``copy_snapshot``. Without it only PRNG keys go through
                the jitted snapshot (their key data).
        """
        copy = self._copy_snapshot if copy is None else copy
        snapshot_fn = self._snapshot_fn if copy == self._copy_snapshot else self._device_copy_fn
        host: list[Any] = [None] * len(saveables)
        device_positions = []
        device_leaves = []
        for i, (saveable, value) in enumerate(zip(saveables, values)):
            if saveable.kind == LeafKind.JAX_ARRAY and not isinstance(value, jax.Array):
                host[i] = saveable.to_host(value)  # a host array for a device leaf: checked, written as is
            elif saveable.kind in (LeafKind.JAX_ARRAY, LeafKind.PRNG_KEY):
                if not isinstance(value, jax.Array):
                    raise InvalidArgumentError(
                        f"{saveable.name}: expected a jax.Array, got {type(value).__name__}"
                    )
                _check_value(saveable, value)
                device_positions.append(i)
                device_leaves.append(value)
            else:
                host[i] = saveable.to_host(value)
        # One jitted call per set of devices (a jitted call cannot take arguments committed to
        # different devices); the common case, one mesh, is a single call.
        # Without copy_snapshot only PRNG keys need device work (their key data): jit does not
        # forward untouched inputs, so passing the other arrays through it would copy them.
        if not copy:
            for i, leaf in zip(device_positions, device_leaves):
                host[i] = leaf
            keep = [k for k, leaf in enumerate(device_leaves) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)]
            device_positions = [device_positions[k] for k in keep]
            device_leaves = [device_leaves[k] for k in keep]
        for group in _group_by_devices(device_positions, device_leaves):
            snapshots = snapshot_fn(tuple(host_leaf for _, host_leaf in group))
            for (i, _), snap in zip(group, snapshots):
                host[i] = snap
        return host

    def check_compatible(self, reader: BundleReader, saveables: Sequence[Saveable], *, reshape: bool) -> None:
        missing = [s.name for s in saveables if not reader.has_tensor(s.name)]
        if missing:
            raise NotFoundError(
                f"Key {missing[0]} not found in checkpoint. "
                f"Restoring from checkpoint failed: {len(missing)} key(s) not found in checkpoint "
                f"{reader.store.url(reader.prefix)}: " + ", ".join(repr(m) for m in missing)
            )
        problems = []
        for s in saveables:
            stored_code = reader.dtype_code(s.name)
            expected_code = _dtypes.from_numpy(s.dtype)
            stored_shape = reader.shape(s.name)
            if stored_code != expected_code and not _numeric.accepts(s, reader.dtype(s.name)):
                problems.append(
                    f"{s.name}: dtype: checkpoint has {_dtypes.name_of(stored_code)}, "
                    f"expected {_dtypes.name_of(expected_code)} (tensor_name = {s.name}; expected dtype "
                    f"{_tf_dtype_name(expected_code)} does not equal original dtype {_tf_dtype_name(stored_code)})"
                )
            if stored_shape != s.shape:
                same_size = int(np.prod(stored_shape)) == int(np.prod(s.shape))
                if not (reshape and same_size):
                    problems.append(
                        f"{s.name}: shape: checkpoint has {list(stored_shape)}, expected {list(s.shape)}"
                    )
        if problems:
            raise InvalidArgumentError(
                "Restoring from checkpoint failed: the checkpoint does not match the template "
                f"({reader.store.url(reader.prefix)}):\n  " + "\n  ".join(problems)
            )

    def finalize(self, saveables: Sequence[Saveable], leaves: list[Any]) -> list[Any]:
        """Wraps restored PRNG key data into typed keys, in one jitted call compiled once."""
        positions = [i for i, s in enumerate(saveables) if s.kind == LeafKind.PRNG_KEY]
        out = list(leaves)
        for group in _group_by_devices(positions, [leaves[i] for i in positions], merge_uncommitted=False):
            impls = tuple(saveables[i].prng_impl for i, _ in group)
            fn = self._finalize_fns.get(impls)
            if fn is None:

                def finalize(arrays: tuple[Any, ...], impls: tuple = impls) -> tuple[Any, ...]:
                    return tuple(jax.random.wrap_key_data(x, impl=impl) for impl, x in zip(impls, arrays))

                fn = self._finalize_fns[impls] = jax.jit(finalize)
            for (i, _), key in zip(group, fn(tuple(data for _, data in group))):
                out[i] = key
        return out


def _tf_dtype_name(code: int) -> str:
    """TF's short dtype name (``DT_FLOAT`` -> ``float``), as its RestoreV2 errors spell it."""
    return _dtypes.name_of(code).removeprefix("DT_").lower()


def _group_by_devices(
    positions: Sequence[int], arrays: Sequence[Any], *, merge_uncommitted: bool = True
) -> list[list[tuple[int, Any]]]:
    """``(position, array)`` pairs grouped by the arrays' device assignment, in first-seen order.

    With ``merge_uncommitted``, uncommitted arrays (which jit may move) join the first group, so
    a tree on one mesh plus default-placed arrays stays one group.
    """
    groups: dict[Any, list[tuple[int, Any]]] = {}
    floating: list[tuple[int, Any]] = []
    for i, array in zip(positions, arrays):
        if merge_uncommitted and not getattr(array, "committed", True):
            floating.append((i, array))
            continue
        sharding = array.sharding
        devices = getattr(sharding, "_device_assignment", None)
        key = tuple(devices) if devices is not None else tuple(sorted(d.id for d in sharding.device_set))
        groups.setdefault(key, []).append((i, array))
    out = list(groups.values())
    if floating:
        if out:
            out[0] = sorted(out[0] + floating, key=lambda pair: pair[0])
        else:
            out = [floating]
    return out


def _check_value(saveable: Saveable, value: Any) -> None:
    shape = tuple(value.shape)
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        if saveable.kind != LeafKind.PRNG_KEY:
            raise InvalidArgumentError(f"{saveable.name}: got a PRNG key array, expected {saveable.kind.value}")
        return
    if shape != saveable.shape or np.dtype(value.dtype) != saveable.dtype:
        raise InvalidArgumentError(
            f"{saveable.name}: value has {value.dtype}{list(shape)}, "
            f"the saver was built for {saveable.dtype}{list(saveable.shape)}"
        )


# Reads smaller than this are run several to a pool task (one hand-off per batch).
_BATCH_BYTES = 4 << 20
_BATCH_TASKS = 256


def _batches(tasks: Sequence[tuple[int, Callable[[], None]]]) -> list[list[Callable[[], None]]]:
    """Consecutive tasks grouped until a group holds ``_BATCH_BYTES`` or ``_BATCH_TASKS`` tasks;
    a task of ``_BATCH_BYTES`` or more is a group of its own."""
    batches: list[list[Callable[[], None]]] = []
    current: list[Callable[[], None]] = []
    held = 0
    for nbytes, task in tasks:
        if nbytes >= _BATCH_BYTES:
            batches.append([task])
            continue
        current.append(task)
        held += nbytes
        if held >= _BATCH_BYTES or len(current) >= _BATCH_TASKS:
            batches.append(current)
            current, held = [], 0
    if current:
        batches.append(current)
    return batches


def _run_all(batch: Sequence[Callable[[], None]]) -> None:
    for task in batch:
        task()


def _counted(tasks: Sequence[tuple[int, Callable[[], None]]], plans: dict[int, BlockReads],
             progress: Tracker) -> list[tuple[int, Callable[[], None]]]:
    """The tasks, each reporting its bytes to ``progress`` once done; a tensor counts as done
    with its last task (a sharded target's blocks are filled by several)."""
    import threading

    lock = threading.Lock()
    left: dict[int, int] = {}
    owner: list[int] = []
    position = 0
    for i, plan in plans.items():
        count = len(plan.reads)
        left[i] = count
        owner.extend([i] * count)
        position += count
    owner.extend([-1] * (len(tasks) - position))

    def wrap(nbytes: int, task: Callable[[], None], tensor: int) -> Callable[[], None]:
        def run() -> None:
            task()
            done = 1
            if tensor >= 0:
                with lock:
                    left[tensor] -= 1
                    done = int(left[tensor] == 0)
            progress.advance(nbytes, tensors=done)

        return run

    return [(nbytes, wrap(nbytes, task, tensor)) for (nbytes, task), tensor in zip(tasks, owner)]

"""The snapshot stage: the bytes a save writes, held so the caller may go on (or not).

Three ways to hold them, one interface (:meth:`Snapshot.hold`):

- **streamed** (synchronous saves): the caller's own arrays, copied to host one write at a time
  through a bounded window, so host memory never holds the whole model;
- ``"host"``: every replica-0 shard copied into fresh host buffers before the save returns
  (host memory = the bytes saved; blocked ≈ the device-to-host copy);
- ``"device"``: an on-device copy of every array before the save returns (blocked ≈ a device
  memory copy; one extra device copy of the saved bytes), streamed to host through the window in
  the background, each copy freed once written.

Example:
    >>> window = ByteWindow(100)
    >>> with window.hold(60):
    ...     window.in_flight
    60
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jaxsaver._errors import InvalidArgumentError
from jaxsaver._hostmem import HostArena
from jaxsaver._sharding import ShardWrite

__all__ = ["ByteWindow", "Snapshot", "SNAPSHOT_MODES", "window_budget", "write_nbytes"]

#: The snapshot modes of asynchronous saves.
SNAPSHOT_MODES = ("host", "device")

_WINDOW_SLACK = 64 << 20
#: Threads copying a host-mode snapshot (the caller's own included).
_COPY_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Smaller snapshots are copied on the caller's thread alone.
_PARALLEL_COPY_BYTES = 8 << 20


def write_nbytes(write: ShardWrite, values: Sequence[Any]) -> int:
    """The bytes one write puts into its data file (strings: their total length, estimated)."""
    value = values[write.value_index]
    dtype = getattr(value, "dtype", None)
    if dtype is not None and np.dtype(dtype).kind != "O":
        shape = write.full_shape if write.extents is None else tuple(n for _, n in write.extents)
        return math.prod(shape) * np.dtype(dtype).itemsize
    return sum(len(x) + 10 for x in np.asarray(value, dtype=object).reshape(-1))


def window_budget(writes: Sequence[ShardWrite], values: Sequence[Any]) -> int:
    """Host bytes in flight at most: 1.25 × the largest device write + 64 MiB."""
    largest = max((write_nbytes(w, values) for w in writes if isinstance(values[w.value_index], jax.Array)), default=0)
    return int(1.25 * largest) + _WINDOW_SLACK


class ByteWindow:
    """A byte budget shared by concurrent writers: ``hold(n)`` waits until ``n`` more bytes fit.

    A single hold larger than the budget is let through alone, so no write can wait forever.
    """

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._in_flight = 0
        self._peak = 0
        self._cond = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def peak(self) -> int:
        """The most bytes held at once so far."""
        return self._peak

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        with self._cond:
            while self._in_flight and self._in_flight + nbytes > self._budget:
                self._cond.wait()
            self._in_flight += nbytes
            self._peak = max(self._peak, self._in_flight)
        try:
            yield
        finally:
            with self._cond:
                self._in_flight -= nbytes
                self._cond.notify_all()


def _host_array(part: jax.Array) -> np.ndarray:
    """One device array's bytes on the host, in a buffer that dies with the returned array.

    ``np.asarray`` of a GPU/TPU array caches the host copy on the array, so a host would keep
    every shard it ever wrote for as long as the arrays live; going through a transient CPU
    array instead frees the copy once written. On CPU devices ``np.asarray`` is a view.
    """
    if all(d.platform == "cpu" for d in part.devices()):
        return np.asarray(part)
    return np.asarray(jax.device_put(part, jax.devices("cpu")[0]))


def _balanced_runs(sizes: Sequence[int], count: int) -> list[range]:
    """Splits positions ``0..len(sizes)`` into at most ``count`` consecutive runs of about equal bytes."""
    total = sum(sizes)
    runs, start, filled = [], 0, 0
    for i, size in enumerate(sizes):
        filled += size
        if filled * count >= total * (len(runs) + 1) and len(runs) < count - 1:
            runs.append(range(start, i + 1))
            start = i + 1
    if start < len(sizes):
        runs.append(range(start, len(sizes)))
    return runs


def host_copies(parts: Sequence[Any]) -> list[np.ndarray]:
    """A fresh host copy of every device array, made by up to ``_COPY_THREADS`` threads.

    The copies share one :class:`~jaxsaver._hostmem.HostArena` (huge pages where the OS allows:
    the page faults of fresh memory, not the copy, dominate a large snapshot), so their memory is
    returned when the last of them dies. A large snapshot is split into runs of about equal bytes
    copied concurrently (numpy and jax release the GIL while copying); under
    ``_PARALLEL_COPY_BYTES`` the copy stays on the caller's thread, where a thread hand-off would
    cost more than it saves.

    Example:
        >>> import jax.numpy as jnp
        >>> [c.tolist() for c in host_copies([jnp.arange(2), jnp.arange(3)])]
        [[0, 1], [0, 1, 2]]
    """
    out = HostArena([(np.dtype(part.dtype), tuple(part.shape)) for part in parts]).views
    sizes = [view.nbytes for view in out]

    def copy_run(run: range) -> None:
        for i in run:
            np.copyto(out[i], _host_array(parts[i]), casting="no")

    threads = min(_COPY_THREADS, len(parts))
    if threads < 2 or sum(sizes) < _PARALLEL_COPY_BYTES:
        copy_run(range(len(parts)))
        return out
    runs = _balanced_runs(sizes, threads)
    pool = _copy_pool()
    futures = [pool.submit(copy_run, run) for run in runs[1:]]
    copy_run(runs[0])  # the caller's thread copies the first run meanwhile
    for future in futures:
        future.result()
    return out


_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _forget_pool_in_child() -> None:
    """A forked child has none of the parent's threads: it starts its own pool when it needs one."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _copy_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process's snapshot copy threads, started on first use and kept (idle threads cost nothing)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(_COPY_THREADS - 1, thread_name_prefix="jaxsaver-copy")
        return _pool


class Snapshot:
    """The values of one save, planned into writes, as the part writers fetch them.

    Args:
        values: per saveable, a host array or a device array (see ``SaverBuilder.snapshot``).
        writes: every write of the save (``plan.writes``).
        mode: None (stream the caller's arrays), ``"host"`` or ``"device"`` (see the module).
        owns_device_arrays: the device arrays are copies made for this save (``"device"`` mode),
            so each is deleted once all its writes are done.
    """

    def __init__(self, values: Sequence[Any], writes: Sequence[ShardWrite], *, mode: str | None,
                 owns_device_arrays: bool = False) -> None:
        if mode is not None and mode not in SNAPSHOT_MODES:
            raise InvalidArgumentError(f"snapshot must be one of {SNAPSHOT_MODES} or None, got {mode!r}")
        self._values = list(values)
        self._mode = mode
        self._owns = owns_device_arrays
        self._host: dict[tuple[int, int | None], np.ndarray] = {}
        self._remaining: dict[int, int] = {}
        self._lock = threading.Lock()
        #: Reports each finished write (see :mod:`jaxsaver._progress`); set by the save path.
        self.progress: Any = None
        self._nbytes = {(w.value_index, w.shard): write_nbytes(w, self._values) for w in writes}
        largest = max((n for (i, _), n in self._nbytes.items() if isinstance(self._values[i], jax.Array)), default=0)
        self.window = ByteWindow(int(1.25 * largest) + _WINDOW_SLACK)  # as window_budget, sizes computed once
        for write in writes:
            self._remaining[write.value_index] = self._remaining.get(write.value_index, 0) + 1
        if mode is not None:  # the caller may mutate its numpy arrays once the save returns
            for i, value in enumerate(self._values):
                if isinstance(value, np.ndarray):
                    self._values[i] = value.copy()
        if mode == "host":
            device_writes = [w for w in writes if isinstance(self._values[w.value_index], jax.Array)]
            # Each shard's array fetched once (``addressable_shards`` makes new arrays on every
            # call, and a transfer started on one of them is lost to the next). On CPU devices
            # the host view is free, so only the copy into a fresh buffer is made.
            shards: dict[int, list[Any]] = {}
            parts = []
            for write in device_writes:
                value = self._values[write.value_index]
                if write.shard is None or len(value.sharding.device_set) == 1:
                    parts.append(value)
                    continue
                if write.value_index not in shards:
                    shards[write.value_index] = [shard.data for shard in value.addressable_shards]
                parts.append(shards[write.value_index][write.shard])
            for part in parts:
                if not all(d.platform == "cpu" for d in part.devices()):
                    part.copy_to_host_async()
            copies = host_copies(parts)
            for write, copy in zip(device_writes, copies):
                self._host[(write.value_index, write.shard)] = copy
            del parts, shards, copies
            for write in device_writes:
                self._values[write.value_index] = None  # only the host copies are kept

    @property
    def values(self) -> list[Any]:
        return self._values

    def _device_part(self, write: ShardWrite) -> Any:
        value = self._values[write.value_index]
        if write.shard is None or len(value.sharding.device_set) == 1:
            return value  # one device: its only shard is the array (addressable_shards costs ~40 µs)
        return value.addressable_shards[write.shard].data

    @contextlib.contextmanager
    def hold(self, write: ShardWrite) -> Iterator[Any]:
        """The host array of one write, held in the window while it is written."""
        key = (write.value_index, write.shard)
        if key in self._host:
            yield self._host.pop(key)
            self._done(write)
            return
        value = self._values[write.value_index]
        if not isinstance(value, jax.Array):
            yield value
            self._done(write)
            return
        part = self._device_part(write)
        with self.window.hold(self._nbytes[key]):
            array = _host_array(part)
            try:
                yield array
            finally:
                del array
        self._done(write)

    @property
    def nbytes(self) -> int:
        """The bytes every write of the save puts into its data file."""
        return sum(self._nbytes.values())

    @property
    def num_tensors(self) -> int:
        """The tensors (values) the save writes."""
        return len(self._remaining)

    def _done(self, write: ShardWrite) -> None:
        with self._lock:
            self._remaining[write.value_index] -= 1
            last = self._remaining[write.value_index] == 0
        if self.progress is not None:
            self.progress.advance(self._nbytes[(write.value_index, write.shard)], tensors=int(last))
        if last and self._owns and isinstance(self._values[write.value_index], jax.Array):
            self._values[write.value_index].delete()

"""Progress of a save or restore: frozen events for a ``progress=`` callback, and a tqdm display.

A save or restore given ``progress=`` reports, as its bytes are written or read, a
:class:`ProgressEvent` (bytes and tensors done and in all, elapsed time, rate and ETA) to a
callable, at most every ``interval`` seconds and always once at the end. ``progress=True``
shows a tqdm bar (``pip install jaxsaver[progress]``) for work over :data:`DISPLAY_THRESHOLD`
bytes; library calls show nothing unless asked, the CLI (``jaxsaver verify``) and the demo ask.

Example:
    >>> events = []
    >>> tracker = Tracker.of(events.append, operation="save", checkpoint="ckpt/model-1",
    ...                      bytes_total=8 << 20, tensors_total=2, interval=0.0)
    >>> tracker.advance(4 << 20, tensors=1); tracker.advance(4 << 20, tensors=1); tracker.finish()
    >>> [(e.tensors_done, e.bytes_done >> 20, e.fraction) for e in events][-1]
    (2, 8, 1.0)
    >>> events[-1].finished
    True
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jaxsaver._errors import InvalidArgumentError, MissingDependencyError

__all__ = ["ProgressEvent", "Tracker", "tqdm_display", "DISPLAY_THRESHOLD"]

#: ``progress=True`` shows a bar only for work of at least this many bytes (64 MiB).
DISPLAY_THRESHOLD = 64 << 20

_MIB = float(1 << 20)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProgressEvent:
    """Where one save or restore stands (what a ``progress=`` callback receives)."""

    operation: str
    """``"save"``, ``"restore"`` or ``"verify"`` (``BundleReader.verify``, the CLI's ``verify``)."""
    checkpoint: str
    """The checkpoint prefix being written or read."""
    bytes_done: int
    """Tensor bytes written (save) or read and checked (restore) so far."""
    bytes_total: int
    """Tensor bytes of the whole operation (string tensors: estimated)."""
    tensors_done: int
    """Tensors (leaves) completed so far."""
    tensors_total: int
    """Tensors of the whole operation."""
    elapsed_s: float
    """Seconds since the tracker started (after the snapshot of a save, once the restore's
    index is checked)."""
    finished: bool = False
    """True on the last event of a completed operation."""

    @property
    def fraction(self) -> float:
        """Bytes done as a fraction of the total (1.0 for an empty operation)."""
        return self.bytes_done / self.bytes_total if self.bytes_total else 1.0

    @property
    def mib_per_s(self) -> float:
        """Average throughput so far, MiB/s (0.0 before any time has passed)."""
        return self.bytes_done / _MIB / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the average rate so far (None until some bytes are done)."""
        if self.finished or self.bytes_done >= self.bytes_total:
            return 0.0
        if not self.bytes_done or self.elapsed_s <= 0:
            return None
        return (self.bytes_total - self.bytes_done) * self.elapsed_s / self.bytes_done


class Tracker:
    """Counts one operation's bytes and tensors from any thread; reports events to a callback.

    Use :meth:`of`, which returns None when nothing is to be reported.
    """

    def __init__(self, callback: Callable[[ProgressEvent], Any], *, operation: str, checkpoint: str,
                 bytes_total: int, tensors_total: int, interval: float = 0.1,
                 close: Callable[[], Any] | None = None) -> None:
        self._callback = callback
        self._close = close
        self._operation = operation
        self._checkpoint = checkpoint
        self._bytes_total = int(bytes_total)
        self._tensors_total = int(tensors_total)
        self._interval = interval
        self._bytes = 0
        self._tensors = 0
        self._start = time.perf_counter()
        self._last = float("-inf")
        self._lock = threading.Lock()

    @classmethod
    def of(cls, progress: Any, *, operation: str, checkpoint: str, bytes_total: int, tensors_total: int,
           interval: float = 0.1) -> Tracker | None:
        """A tracker for ``progress``: None/False (none), True (a tqdm bar over the threshold),
        or a callable taking a :class:`ProgressEvent`.

        Raises:
            InvalidArgumentError: ``progress`` is none of these.
        """
        if progress is None or progress is False:
            return None
        if progress is True:
            if bytes_total < DISPLAY_THRESHOLD:
                return None
            display = tqdm_display()
            return cls(display, operation=operation, checkpoint=checkpoint, bytes_total=bytes_total,
                       tensors_total=tensors_total, interval=interval, close=display.close)
        if not callable(progress):
            raise InvalidArgumentError(
                f"progress must be None, a bool or a callable taking a ProgressEvent, got {type(progress).__name__}"
            )
        return cls(progress, operation=operation, checkpoint=checkpoint, bytes_total=bytes_total,
                   tensors_total=tensors_total, interval=interval)

    def _event(self, finished: bool) -> ProgressEvent:
        return ProgressEvent(
            operation=self._operation, checkpoint=self._checkpoint, bytes_done=self._bytes,
            bytes_total=self._bytes_total, tensors_done=self._tensors, tensors_total=self._tensors_total,
            elapsed_s=time.perf_counter() - self._start, finished=finished,
        )

    def advance(self, nbytes: int, *, tensors: int = 0) -> None:
        """Counts ``nbytes`` and ``tensors`` more done; reports if ``interval`` has passed."""
        with self._lock:
            self._bytes += int(nbytes)
            self._tensors += tensors
            now = time.perf_counter()
            if now - self._last < self._interval:
                return
            self._last = now
            event = self._event(False)
            self._callback(event)  # under the lock: events reach the callback in order

    def finish(self) -> None:
        """Reports the final event (``finished=True``) and closes a display."""
        with self._lock:
            event = self._event(True)
            self._callback(event)
        self.close()

    def close(self) -> None:
        """Closes a display without a final event (the operation failed: its error says so)."""
        if self._close is not None:
            self._close()


class _TqdmDisplay:
    """A tqdm bar in MiB fed by progress events; the postfix counts tensors."""

    def __init__(self) -> None:
        try:
            import tqdm  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "progress=True shows a tqdm progress bar: install it with `pip install jaxsaver[progress]` "
                "(or pass a callable to progress=)"
            ) from None
        self._bar: Any = None

    def __call__(self, event: ProgressEvent) -> None:
        import tqdm

        if self._bar is None:
            self._bar = tqdm.tqdm(
                total=round(event.bytes_total / _MIB, 1), unit="MiB", desc=f"{event.operation} {event.checkpoint}",
                leave=True, dynamic_ncols=True,
            )
        self._bar.n = round(event.bytes_done / _MIB, 1)
        self._bar.set_postfix_str(f"{event.tensors_done}/{event.tensors_total} tensors", refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def tqdm_display() -> Callable[[ProgressEvent], None]:
    """A progress callback drawing a tqdm bar (bytes in MiB, MiB/s, ETA; tensors as postfix).

    Raises:
        ImportError: tqdm is not installed (``pip install jaxsaver[progress]``).
    """
    return _TqdmDisplay()

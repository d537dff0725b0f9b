"""Background saves: one worker per saver, saves in order, no failure left unheard.

A save's work after its snapshot (write the parts, merge, commit the index, the state file,
retention) runs on the saver's worker thread. A failure is kept and raised by the next call
that waits (the next ``save``, ``wait_until_finished``, ``close`` or the handle's ``result``);
one nobody collected is logged when the interpreter exits.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import threading
import weakref
from collections.abc import Callable

__all__ = ["SaveHandle", "BackgroundWriter", "ClosesOnExit"]

logger = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


class SaveHandle:
    """What an asynchronous ``Saver.save(..., blocking=False)`` returns.

    Example:
        >>> import concurrent.futures
        >>> future = concurrent.futures.Future(); future.set_result("ckpt/model-1")
        >>> handle = SaveHandle(future, "ckpt/model-1", None)
        >>> handle.done(), handle.result()
        (True, 'ckpt/model-1')
    """

    def __init__(self, future: concurrent.futures.Future, checkpoint: str, writer: BackgroundWriter | None) -> None:
        self._future = future
        self._writer = writer
        #: The checkpoint prefix this save writes.
        self.checkpoint = checkpoint

    def done(self) -> bool:
        """Whether the save has finished (committed or failed)."""
        return self._future.done()

    def result(self, timeout: float | None = None) -> str:
        """Waits for the save; returns its prefix or raises its error (which is then collected)."""
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise
        except BaseException as error:
            if self._writer is not None:
                self._writer.collected(self._future)
            _add_checkpoint_note(error, self.checkpoint)
            raise

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """Waits for the save; returns its error (collected) or None."""
        error = self._future.exception(timeout)
        if error is not None and self._writer is not None:
            self._writer.collected(self._future)
        return error

    def __repr__(self) -> str:
        state = "done" if self.done() else "in flight"
        return f"SaveHandle({self.checkpoint!r}, {state})"


class BackgroundWriter:
    """Runs one saver's background saves in order, and keeps their failures until heard."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: list[tuple[concurrent.futures.Future, str]] = []
        self._lock = threading.Lock()
        _LIVE.add(self)

    def submit(self, job: Callable[[], str], checkpoint: str) -> SaveHandle:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"jaxsaver-{self._name}")
            future = self._executor.submit(job)
            self._pending.append((future, checkpoint))
        return SaveHandle(future, checkpoint, self)

    def collected(self, future: concurrent.futures.Future) -> None:
        """Marks a failed save's error as heard by the caller."""
        with self._lock:
            self._pending = [(f, c) for f, c in self._pending if f is not future]

    def wait(self) -> None:
        """Waits for every save; raises the first failure not yet collected (collecting all).

        The error names the checkpoint whose save failed.
        """
        with self._lock:
            pending = list(self._pending)
        for future, _ in pending:
            concurrent.futures.wait([future])
        first: BaseException | None = None
        with self._lock:
            still = []
            for future, checkpoint in self._pending:
                if not future.done():
                    still.append((future, checkpoint))
                    continue
                error = future.exception()
                if error is not None and first is None:
                    first = error
                    _add_checkpoint_note(error, checkpoint)
            self._pending = still
        if first is not None:
            raise first

    def close(self) -> None:
        """Waits for every save (raising a failure), then stops the worker."""
        try:
            self.wait()
        finally:
            with self._lock:
                executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=True)

    def unheard(self) -> list[tuple[str, BaseException]]:
        """Failed saves nobody collected: ``(checkpoint, error)``."""
        with self._lock:
            return [(c, f.exception()) for f, c in self._pending if f.done() and f.exception() is not None]


def _add_checkpoint_note(error: BaseException, checkpoint: str) -> None:
    """Makes the error's message name the checkpoint whose background save failed."""
    if checkpoint in str(error):
        return
    if isinstance(error, OSError) and error.strerror:
        error.strerror = f"{error.strerror} (background save of {checkpoint})"
    elif len(error.args) == 1 and isinstance(error.args[0], str):
        error.args = (f"{error.args[0]} (background save of {checkpoint})",)
    else:
        error.add_note(f"(background save of {checkpoint})")


@atexit.register
def _log_unheard_failures() -> None:
    # concurrent.futures joins its worker threads before atexit callbacks run, so every
    # background save has finished here.
    for writer in list(_LIVE):
        for checkpoint, error in writer.unheard():
            logger.error("jaxsaver: the background save of %s failed and nobody collected it: %r", checkpoint, error)


class ClosesOnExit:
    """``with obj:`` waits for the saves in flight and closes on exit (``obj.close()``).

    When the body raised, its error wins; a background failure met while closing is logged.
    """

    close: Callable[[], None]  # defined by each user: wait for the saves, stop the worker

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except BaseException as err:  # noqa: BLE001
            logger.error("A background save failed as well: %r", err)

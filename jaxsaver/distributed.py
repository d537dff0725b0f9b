"""Bounded, named steps of a multi-process save through the ``jax.distributed`` key-value store.

Each step of a save is one :meth:`Coordination.step`: every process publishes a small value under
``jaxsaver/<save id>/<step>/<process>``; process 0 gathers them (polling one directory listing),
and publishes a verdict, ``jaxsaver/<save id>/<step>/all``, which the other processes wait for
with the service's own blocking get. No device collective is involved, so a dead or slow process
can never hang the others: every wait has a deadline (``timeout_s``, default
``JAXSAVER_BARRIER_TIMEOUT_S`` or :data:`DEFAULT_TIMEOUT_S`), and a timeout raises
:class:`DistributedTimeoutError` on every waiting process naming the processes that did not
arrive and the checkpoint being written. A process whose part fails publishes its error instead
of a value, so the others raise :class:`PeerFailedError` at once instead of waiting.

Keys are removed by process 0 as soon as every process is known to have read them (a step's keys
once every process has published the next step; the last step's at the next save), so the store
holds at most one step of one save at rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jaxsaver._errors import CoordinationError, DistributedTimeoutError, PeerFailedError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CoordinationError",
    "DistributedTimeoutError",
    "PeerFailedError",
    "Coordination",
    "current",
    "next_save_id",
    "offsets",
]

logger = logging.getLogger(__name__)

#: Seconds a process waits for the others at one step of a save.
DEFAULT_TIMEOUT_S = 300.0

#: Process 0 polls the step's directory at this interval at most (it starts at 5 ms).
_MAX_POLL_S = 0.2
#: A process still waiting at a step logs a warning this often (naming whom it waits for).
_LOG_EVERY_S = 30.0
_NAMESPACE = "jaxsaver"
_ERROR = "error:"

_save_numbers: dict[str, int] = {}  # per checkpoint key digest: saves started by this process
_MAX_REMEMBERED = 4096
_unswept: list[str] = []  # process 0: ids of saves whose keys the next save removes
_lock = threading.Lock()


def _names(pids: Sequence[int]) -> str:
    shown = ", ".join(str(p) for p in pids[:32])
    return shown + (f" and {len(pids) - 32} more" if len(pids) > 32 else "")


def _outcome(step: str) -> str:
    """What a failure at ``step`` means for the checkpoint (process 0 commits before "committed")."""
    return "process 0 may have committed the index" if step == "committed" else "no index was committed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Coordination:
    """One multi-process save's view of the coordination service.

    Example:
        >>> Coordination(client=None, process_id=1, num_processes=4, save_id="s1", checkpoint="ckpt/m-1").leader
        False
    """

    #: The ``jax.distributed`` client (``jax._src.distributed.global_state.client``).
    client: Any
    #: This process's index.
    process_id: int
    #: How many processes take part.
    num_processes: int
    #: The save's id, the same on every process (see :func:`next_save_id`).
    save_id: str
    #: The checkpoint being written, for messages.
    checkpoint: str
    #: Seconds each process waits at each step.
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def leader(self) -> bool:
        """Whether this process commits (process 0)."""
        return self.process_id == 0

    def _dir(self, step: str) -> str:
        return f"{_NAMESPACE}/{self.save_id}/{step}/"

    def step(self, step: str, value: str, *, combine: Callable[[list[str]], str] | None = None) -> str:
        """Publishes ``value`` for this process at ``step``; returns the step's result.

        Process 0 waits for every process's value and publishes ``combine(values)`` (default: the
        values as a JSON list) as the result every process returns; an exception of ``combine``
        is raised on process 0 and reported to the others as a failure.

        Raises:
            PeerFailedError: a process published a failure at this step.
            DistributedTimeoutError: processes did not publish within the timeout (named).
            CoordinationError: the coordination service itself failed.
        """
        self._set(self._dir(step) + str(self.process_id), value)
        if self.leader:
            values = self._gather(step)
            try:
                result = combine(values) if combine is not None else json.dumps(values)
            except BaseException as err:
                self._verdict(step, {"error": f"process 0: {type(err).__name__}: {err}", "kind": "failed"})
                raise
            self._verdict(step, {"result": result})
            return result
        return self._await_verdict(step)

    def fail(self, step: str, error: BaseException, *, committed: bool = False) -> None:
        """Publishes this process's failure at ``step`` (best effort: the error raised is the save's).

        On process 0 the step's verdict is the failure too, so the others raise at once;
        ``committed`` says that its ``.index`` was written before the failure.
        """
        text = f"{type(error).__name__}: {error}"[:2000]
        try:
            self.client.key_value_set(self._dir(step) + str(self.process_id), _ERROR + text, allow_overwrite=True)
            if self.leader:
                outcome = "its index was committed before" if committed else "no index was committed"
                self._verdict(step, {"error": f"process 0 failed at step {step!r}: {text}; {outcome}", "kind": "failed"})
        except Exception as err:  # noqa: BLE001 - the service is gone; the others time out
            logger.warning("process %d could not publish its failure at %s: %s", self.process_id, step, err)

    def done(self) -> None:
        """This save is over (committed or failed): process 0 removes its keys at the next save."""
        if self.leader:
            with _lock:
                _unswept.append(self.save_id)

    def sweep_earlier(self) -> None:
        """Process 0, once every process has published this save's first step (so has left
        every earlier save): removes the keys of the earlier saves."""
        if not self.leader:
            return
        with _lock:
            earlier = [s for s in _unswept if s != self.save_id]
            _unswept[:] = [s for s in _unswept if s == self.save_id]
        for save_id in earlier:
            self._delete(f"{_NAMESPACE}/{save_id}/")

    def sweep(self, *steps: str) -> None:
        """Removes the keys of ``steps`` of this save (process 0, once everyone has read them)."""
        for step in steps:
            self._delete(self._dir(step))

    # ------------------------------------------------------------------ internals

    def _verdict(self, step: str, verdict: dict[str, str]) -> None:
        self.client.key_value_set(self._dir(step) + "all", json.dumps(verdict), allow_overwrite=True)

    def _set(self, key: str, value: str) -> None:
        try:
            self.client.key_value_set(key, value)
        except Exception as err:  # the jax client raises JaxRuntimeError
            raise CoordinationError(
                f"saving checkpoint {self.checkpoint}: process {self.process_id} could not publish {key}: {err}"
            ) from None

    def _delete(self, key: str) -> None:
        try:
            self.client.key_value_delete(key)
        except Exception as err:  # noqa: BLE001 - leftover keys are small; the save stands
            logger.warning("could not remove coordination keys %s: %s", key, err)

    def _blocking_get(self, key: str, seconds: float, step: str) -> str | None:
        """The value at ``key``, or None if it did not appear within ``seconds``."""
        try:
            return self.client.blocking_key_value_get(key, max(1, int(seconds * 1000)))
        except Exception as err:  # the jax client raises JaxRuntimeError
            if "DEADLINE_EXCEEDED" in str(err):
                return None
            raise CoordinationError(
                f"saving checkpoint {self.checkpoint}: the coordination service did not answer "
                f"(process 0 hosts it) at step {step!r}: {err}"
            ) from None

    def _listing(self, step: str) -> dict[int, str]:
        base = self._dir(step)
        try:
            pairs = self.client.key_value_dir_get(base)
        except Exception as err:
            raise CoordinationError(
                f"saving checkpoint {self.checkpoint}: the coordination service did not answer "
                f"(process 0 hosts it): {err}"
            ) from None
        out = {}
        for key, value in pairs:
            name = key[len(base):] if key.startswith(base) else key.rsplit("/", 1)[-1]
            if name.isdigit():
                out[int(name)] = value
        return out

    def _timeout(self, step: str, late: Sequence[int]) -> DistributedTimeoutError:
        return DistributedTimeoutError(
            f"saving checkpoint {self.checkpoint}: process(es) {_names(list(late))} of {self.num_processes} "
            f"did not reach step {step!r} within {self.timeout_s:g} s (seen from process {self.process_id}); "
            + _outcome(step)
        )

    @staticmethod
    def _failure(step: str, checkpoint: str, failed: dict[int, str]) -> PeerFailedError:
        pid = min(failed)
        others = sorted(set(failed) - {pid})
        return PeerFailedError(
            f"saving checkpoint {checkpoint}: process {pid} failed at step {step!r}: {failed[pid][len(_ERROR):]}"
            + (f" (processes {_names(others)} failed too)" if others else "")
            + "; " + _outcome(step)
        )

    def _gather(self, step: str) -> list[str]:
        start = time.monotonic()
        deadline = start + self.timeout_s
        next_log = start + _LOG_EVERY_S
        pause = 0.005
        while True:
            values = self._listing(step)
            failed = {p: v for p, v in values.items() if v.startswith(_ERROR)}
            if failed:
                error = self._failure(step, self.checkpoint, failed)
                self._verdict(step, {"error": str(error), "kind": "failed"})
                raise error
            if len(values) >= self.num_processes:
                return [values[p] for p in range(self.num_processes)]
            if time.monotonic() >= deadline:
                error = self._timeout(step, [p for p in range(self.num_processes) if p not in values])
                self._verdict(step, {"error": str(error), "kind": "timeout"})
                raise error
            if time.monotonic() >= next_log:
                next_log += _LOG_EVERY_S
                late = [p for p in range(self.num_processes) if p not in values]
                logger.warning("saving checkpoint %s: process 0 has waited %.0f s of %g s at step %r for process(es) %s",
                               self.checkpoint, time.monotonic() - start, self.timeout_s, step, _names(late))
            time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _MAX_POLL_S)

    def _await_verdict(self, step: str) -> str:
        key = self._dir(step) + "all"
        start = time.monotonic()
        deadline = start + self.timeout_s
        raw = None
        while raw is None and (left := deadline - time.monotonic()) > 0:
            raw = self._blocking_get(key, min(left, _LOG_EVERY_S), step)  # in slices, to log long waits
            if raw is None and time.monotonic() < deadline:
                logger.warning("saving checkpoint %s: process %d has waited %.0f s of %g s at step %r",
                               self.checkpoint, self.process_id, time.monotonic() - start, self.timeout_s, step)
        if raw is None:  # process 0 gave no verdict in time: name the late processes ourselves
            values = self._listing(step)
            failed = {p: v for p, v in values.items() if v.startswith(_ERROR)}
            if failed:
                raise self._failure(step, self.checkpoint, failed)
            raise self._timeout(step, [p for p in range(self.num_processes) if p not in values] or [0])
        verdict = json.loads(raw)
        if "result" in verdict:
            return str(verdict["result"])
        kind = DistributedTimeoutError if verdict.get("kind") == "timeout" else PeerFailedError
        raise kind(f"{verdict['error']} (reported by process 0 to process {self.process_id})")


def next_save_id(prefix_key: str) -> str:
    """A name for the next multi-process save of ``prefix_key`` that every process computes alike.

    A digest of the checkpoint's key and how many times this process saved that key: every
    process saves in the same order (a JAX program is SPMD). Counting per key keeps processes in
    step even after one of them raised before a save started (the next checkpoint has a new key).

    Example:
        >>> a, b = next_save_id("ckpt/model-1"), next_save_id("ckpt/model-1")
        >>> a.split("-")[0] == b.split("-")[0], int(b.split("-")[1]) - int(a.split("-")[1])
        (True, 1)
    """
    digest = hashlib.sha1(prefix_key.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    with _lock:
        number = _save_numbers.pop(digest, 0) + 1
        _save_numbers[digest] = number  # most recent last
        while len(_save_numbers) > _MAX_REMEMBERED:  # long swept: a forgotten key restarts at 1
            del _save_numbers[next(iter(_save_numbers))]
    return f"{digest}-{number}"


def current(save_id_for: str, checkpoint: str, timeout_s: float | None = None) -> Coordination | None:
    """The coordination of a multi-process save of ``save_id_for``, or None in a single process.

    Raises:
        CoordinationError: many processes, but ``jax.distributed.initialize`` was not called.
        InvalidArgumentError: the timeout is not a positive number.
    """
    import jax

    if jax.process_count() == 1:
        return None
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    if client is None:
        raise CoordinationError(
            f"saving checkpoint {checkpoint}: a multi-process save needs jax.distributed.initialize(...) "
            "(its key-value store coordinates the processes)"
        )
    if timeout_s is None:
        raw = os.environ.get("JAXSAVER_BARRIER_TIMEOUT_S")
        try:
            timeout_s = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            from jaxsaver._errors import InvalidArgumentError

            raise InvalidArgumentError(f"JAXSAVER_BARRIER_TIMEOUT_S must be a number of seconds, got {raw!r}") from None
    return Coordination(
        client=client, process_id=jax.process_index(), num_processes=jax.process_count(),
        save_id=next_save_id(save_id_for), checkpoint=checkpoint, timeout_s=timeout_s,
    )


def offsets(counts: Sequence[int]) -> list[int]:
    """Each process's first global part number, given every process's part count.

    Example:
        >>> offsets([2, 1, 3])
        [0, 2, 3]
    """
    out, total = [], 0
    for count in counts:
        out.append(total)
        total += count
    return out

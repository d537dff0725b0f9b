"""Multi-process saves: part numbering, bounded named barriers and failure news, through the
``jax.distributed`` coordination service (its key-value store), never a device collective.

Every wait has a deadline (``JAXSAVER_BARRIER_TIMEOUT_S`` or :data:`DEFAULT_TIMEOUT_S`); a
timeout raises :class:`DistributedTimeoutError` on every waiting process, naming the processes
that did not arrive and the checkpoint being written. A process whose part of a save fails
publishes the failure, so the others fail at once instead of waiting out the deadline.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jaxsaver._errors import JaxsaverError

__all__ = ["DEFAULT_TIMEOUT_S", "Coordination", "DistributedTimeoutError", "PeerFailedError", "current"]

#: Seconds a process waits for the others at one step of a save.
DEFAULT_TIMEOUT_S = 300.0

_POLL_MS = 200


class DistributedTimeoutError(JaxsaverError, TimeoutError):
    """Some processes did not reach a step of a multi-process save in time (they are named)."""


class PeerFailedError(JaxsaverError, RuntimeError):
    """Another process's part of a multi-process save failed (its error is quoted)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Coordination:
    """The coordination service of a multi-process JAX program, as one save uses it."""

    #: The ``jax.distributed`` client (key-value store).
    client: Any
    #: This process's index.
    process_id: int
    #: How many processes take part.
    num_processes: int
    #: Seconds to wait at each step.
    timeout_s: float = DEFAULT_TIMEOUT_S

    def exchange(self, save_id: str, step: str, value: str, *, checkpoint: str) -> list[str]:
        """Publishes ``value`` for this process at ``step``; returns every process's, in order.

        Raises:
            PeerFailedError: a process published a failure (``"error:..."``) at this step.
            DistributedTimeoutError: processes did not publish within the timeout (named).
        """
        base = f"jaxsaver/{save_id}/{step}"
        self.client.key_value_set(f"{base}/{self.process_id}", value)
        deadline = time.monotonic() + self.timeout_s
        values: dict[int, str] = {}
        while True:
            for pid in range(self.num_processes):
                if pid in values:
                    continue
                got = self.client.key_value_try_get(f"{base}/{pid}") if hasattr(self.client, "key_value_try_get") else None
                if got is not None:
                    values[pid] = got
            failed = {pid: v for pid, v in values.items() if v.startswith("error:")}
            if failed:
                pid, message = sorted(failed.items())[0]
                raise PeerFailedError(
                    f"process {pid} failed while saving checkpoint {checkpoint} ({step}): {message[len('error:'):]}"
                )
            if len(values) == self.num_processes:
                return [values[pid] for pid in range(self.num_processes)]
            if time.monotonic() >= deadline:
                late = [pid for pid in range(self.num_processes) if pid not in values]
                raise DistributedTimeoutError(
                    f"saving checkpoint {checkpoint}: process(es) {', '.join(map(str, late))} did not reach "
                    f"step {step!r} within {self.timeout_s:g} s (this is process {self.process_id} of "
                    f"{self.num_processes})"
                )
            time.sleep(_POLL_MS / 1000)

    def fail(self, save_id: str, step: str, error: BaseException) -> None:
        """Tells the other processes that this process's ``step`` failed (best effort)."""
        try:
            self.client.key_value_set(f"jaxsaver/{save_id}/{step}/{self.process_id}", f"error:{error!r}"[:2000])
        except Exception:  # noqa: BLE001 - the save's own error is the one raised
            pass


def save_id_for(prefix_key: str, sequence: int) -> str:
    """A name for one save that every process computes alike (same prefix, same save count)."""
    digest = hashlib.sha1(prefix_key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{digest}-{sequence}"


def current(timeout_s: float | None = None) -> Coordination | None:
    """The coordination of this multi-process program, or None in a single process."""
    import jax

    if jax.process_count() == 1:
        return None
    from jax._src import distributed

    client = distributed.global_state.client
    if client is None:  # pragma: no cover - multi-process without jax.distributed
        raise JaxsaverError("a multi-process save needs jax.distributed.initialize(...)")
    if timeout_s is None:
        timeout_s = float(os.environ.get("JAXSAVER_BARRIER_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    return Coordination(client=client, process_id=jax.process_index(), num_processes=jax.process_count(),
                        timeout_s=timeout_s)


def offsets(counts: Sequence[int]) -> list[int]:
    """Each process's first global part number, given every process's part count."""
    out, total = [], 0
    for count in counts:
        out.append(total)
        total += count
    return out

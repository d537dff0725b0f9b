"""The Saver's checkpoint retention policy (max_to_keep, keep_checkpoint_every_n_hours), pure.

This module reproduces ``tf.compat.v1.train.Saver._RecordLastCheckpoint`` followed by
``_MaybeDeleteOldCheckpoints`` as a function of values: it reads no clock and touches no file.
The saver supplies ``now`` and performs the deletions it is told about, after it has written the
``checkpoint`` state file (TF's order).

Example:
    >>> policy = RetentionPolicy(max_to_keep=2)
    >>> state = initial_state(policy, now=0.0)
    >>> for step, now in enumerate([10.0, 20.0, 30.0], start=1):
    ...     state, doomed = record_checkpoint(policy, state, f"/ckpt/model-{step}", now)
    >>> state.paths
    ('/ckpt/model-2', '/ckpt/model-3')
    >>> doomed
    ['/ckpt/model-1']
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "RetentionPolicy",
    "RetentionState",
    "initial_state",
    "record_checkpoint",
    "absorb_checkpoints",
    "with_last_checkpoints",
]


def _as_float32(value: float) -> float:
    """``value`` rounded to the nearest 32-bit float, as a Python float."""
    return struct.unpack("<f", struct.pack("<f", value))[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    """Which checkpoints a saver keeps on disk."""

    max_to_keep: int | None = 5
    """How many recent checkpoints stay listed; older ones are deleted unless preserved.
    ``None`` or ``0`` keeps every checkpoint and tracks none (TF: ``last_checkpoints`` stays as
    it was, and the state file lists only the newest). TF's literal arithmetic is kept for
    negative values too."""

    keep_checkpoint_every_n_hours: float = 10000.0
    """A checkpoint about to be dropped is preserved (left on disk, but no longer listed) when it
    was written after the current preservation deadline; the deadline then advances by this
    period."""

    @property
    def period_seconds(self) -> float:
        """The preservation period in seconds, exactly as TF's Saver computes it.

        TF reads the hours back from ``SaverDef.keep_checkpoint_every_n_hours``, a 32-bit float
        field, so the period is ``float32(hours) * 3600`` (e.g. ``1/3600`` hours is
        1.0000000242 s, not 1 s).
        """
        return _as_float32(self.keep_checkpoint_every_n_hours) * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionState:
    """What a saver remembers between saves (TF's ``_last_checkpoints``, ``_next_checkpoint_time``)."""

    last_checkpoints: tuple[tuple[str, float], ...] = ()
    """``(prefix, timestamp)`` pairs of the listed checkpoints, oldest first."""

    next_checkpoint_time: float
    """Seconds since the epoch; a dropped checkpoint written strictly after this is preserved."""

    @property
    def paths(self) -> tuple[str, ...]:
        """The listed prefixes, oldest first (TF's ``Saver.last_checkpoints``)."""
        return tuple(path for path, _ in self.last_checkpoints)


def initial_state(policy: RetentionPolicy, now: float) -> RetentionState:
    """The state of a freshly built saver at time ``now`` (TF: at ``Saver.build()``)."""
    return RetentionState(next_checkpoint_time=now + policy.period_seconds)


def with_last_checkpoints(
    state: RetentionState, checkpoints: Iterable[str | tuple[str, float]]
) -> RetentionState:
    """``state`` with its list replaced (TF's ``set_last_checkpoints[_with_time]``).

    A bare path gets timestamp ``+inf``, as in TF's ``set_last_checkpoints``: it is never
    deleted by the hours rule, it is always preserved.
    """
    pairs = tuple(
        (item, math.inf) if isinstance(item, str) else (str(item[0]), float(item[1]))
        for item in checkpoints
    )
    return dataclasses.replace(state, last_checkpoints=pairs)


def record_checkpoint(
    policy: RetentionPolicy, state: RetentionState, path: str, now: float
) -> tuple[RetentionState, list[str]]:
    """Records a checkpoint just written at ``path`` and decides what to delete.

    Exactly TF's ``_RecordLastCheckpoint`` then ``_MaybeDeleteOldCheckpoints``:

    * ``max_to_keep`` ``None``/``0``: nothing changes and nothing is deleted.
    * otherwise any earlier entry for ``path`` is removed and ``(path, now)`` appended; if the list
      is then longer than ``max_to_keep``, its oldest entry (one only) leaves the list. That entry
      is preserved on disk when its timestamp is strictly greater than ``next_checkpoint_time``,
      and the deadline advances by one period; otherwise it is returned for deletion.

    Args:
        policy: the saver's settings.
        state: the state before this save.
        path: the prefix just written (as the saver will list it).
        now: the time of this save, seconds since the epoch.

    Returns:
        The new state and the prefixes to delete (with all their files), in order.
    """
    if not policy.max_to_keep:
        return state, []
    kept = tuple(entry for entry in state.last_checkpoints if entry[0] != path)
    kept += ((path, now),)
    if len(kept) <= policy.max_to_keep:
        return dataclasses.replace(state, last_checkpoints=kept), []
    (dropped, dropped_time), kept = kept[0], kept[1:]
    if dropped_time > state.next_checkpoint_time:
        return (
            RetentionState(
                last_checkpoints=kept,
                next_checkpoint_time=state.next_checkpoint_time + policy.period_seconds,
            ),
            [],
        )
    return dataclasses.replace(state, last_checkpoints=kept), [dropped]


def absorb_checkpoints(
    policy: RetentionPolicy, state: RetentionState, found: Iterable[tuple[str, float]]
) -> tuple[RetentionState, list[str]]:
    """Adds checkpoints committed but never recorded (a crash before the state file) to the list.

    They join the list in timestamp order; while it is longer than ``max_to_keep`` its oldest
    entry leaves it, preserved or deleted by the same rule as :func:`record_checkpoint`.

    Example:
        >>> policy = RetentionPolicy(max_to_keep=2)
        >>> state = with_last_checkpoints(initial_state(policy, now=0.0), [("m-1", 1.0), ("m-2", 2.0)])
        >>> state, doomed = absorb_checkpoints(policy, state, [("m-3", 3.0)])
        >>> state.paths, doomed
        (('m-2', 'm-3'), ['m-1'])
    """
    if not policy.max_to_keep:
        return state, []
    known = {path for path, _ in state.last_checkpoints}
    new = [(str(p), float(t)) for p, t in found if p not in known]
    if not new:
        return state, []
    kept = tuple(sorted(state.last_checkpoints + tuple(new), key=lambda entry: entry[1]))
    deadline = state.next_checkpoint_time
    doomed = []
    while len(kept) > max(policy.max_to_keep, 0):
        (dropped, dropped_time), kept = kept[0], kept[1:]
        if dropped_time > deadline:
            deadline += policy.period_seconds
        else:
            doomed.append(dropped)
    return RetentionState(last_checkpoints=kept, next_checkpoint_time=deadline), doomed

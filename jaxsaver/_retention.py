"""Checkpoint retention policies, pure: TF1's Saver rule, and the manager's composable policies.

The first half reproduces ``tf.compat.v1.train.Saver._RecordLastCheckpoint`` followed by
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

The second half is :class:`jaxsaver.CheckpointManager`'s retention: small frozen policy objects
(:class:`LatestN`, :class:`EveryNSteps`, :class:`EveryNSeconds`, :class:`BestN`, :class:`Latest`)
each saying which of a list of :class:`CheckpointInfo` it keeps; :class:`AnyOf` keeps what any
of them keeps. They read no clock and no file: the manager gives them the step, time and score
of every checkpoint it tracks.

    >>> losses = [0.9, 0.7, 0.4, 0.6, 0.3, 0.5, 0.8]
    >>> infos = [CheckpointInfo(step=s, time=float(s), score=l) for s, l in enumerate(losses, start=1)]
    >>> policy = AnyOf(policies=(Latest(), BestN(n=2, mode="min")))
    >>> sorted(policy.keep(infos))
    [3, 5, 7]
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from jaxsaver._errors import InvalidArgumentError

__all__ = [
    "RetentionPolicy",
    "RetentionState",
    "initial_state",
    "record_checkpoint",
    "absorb_checkpoints",
    "with_last_checkpoints",
    "CheckpointInfo",
    "Policy",
    "Latest",
    "LatestN",
    "EveryNSteps",
    "EveryNSeconds",
    "BestN",
    "AnyOf",
    "ManagerPolicy",
    "keep_reasons",
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

# ============================================================================================
# CheckpointManager policies: which checkpoints to keep, as pure functions of their steps,
# times and scores.
# ============================================================================================


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointInfo:
    """What a retention policy knows about one checkpoint."""

    step: int
    """The checkpoint's step (from its name, ``model-<step>``)."""
    time: float
    """When it was written, seconds since the epoch."""
    score: float | None = None
    """``best_fn(metrics)`` for this checkpoint; None when it has no metrics."""


class Policy(Protocol):
    """A retention policy: which checkpoints (by step) of a list it keeps."""

    @property
    def label(self) -> str:
        """A short name for displays (``jaxsaver ls``), e.g. ``"best_n=2"``."""

    def keep(self, checkpoints: Sequence[CheckpointInfo]) -> frozenset[int]:
        """The steps of ``checkpoints`` this policy keeps."""


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Latest:
    """Keeps the checkpoint with the highest step (always part of the manager's policy).

    Example:
        >>> Latest().keep([CheckpointInfo(step=3, time=0.0), CheckpointInfo(step=9, time=0.0)])
        frozenset({9})
    """

    @property
    def label(self) -> str:
        return "latest"

    def keep(self, checkpoints: Sequence[CheckpointInfo]) -> frozenset[int]:
        return frozenset([max(c.step for c in checkpoints)]) if checkpoints else frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class LatestN:
    """Keeps the ``n`` checkpoints with the highest steps (TF2's ``max_to_keep``).

    Example:
        >>> infos = [CheckpointInfo(step=s, time=0.0) for s in (1, 2, 3, 4)]
        >>> sorted(LatestN(n=2).keep(infos))
        [3, 4]
    """

    n: int
    """How many of the newest checkpoints to keep (at least 1)."""

    def __post_init__(self) -> None:
        _positive_int("max_to_keep", self.n)

    @property
    def label(self) -> str:
        return f"max_to_keep={self.n}"

    def keep(self, checkpoints: Sequence[CheckpointInfo]) -> frozenset[int]:
        steps = sorted({c.step for c in checkpoints})
        return frozenset(steps[-self.n :])


@dataclass(frozen=True, slots=True, kw_only=True)
class EveryNSteps:
    """Keeps every checkpoint whose step is a multiple of ``n`` (step 0 included).

    Example:
        >>> sorted(EveryNSteps(n=4).keep([CheckpointInfo(step=s, time=0.0) for s in range(1, 11)]))
        [4, 8]
    """

    n: int
    """The step period (at least 1)."""

    def __post_init__(self) -> None:
        _positive_int("keep_every_n_steps", self.n)

    @property
    def label(self) -> str:
        return f"keep_every_n_steps={self.n}"

    def keep(self, checkpoints: Sequence[CheckpointInfo]) -> frozenset[int]:
        return frozenset(c.step for c in checkpoints if c.step % self.n == 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class EveryNSeconds:
    """Keeps one checkpoint per ``seconds``: walking by step, the oldest, then each written at
    least ``seconds`` after the last one kept (orbax's ``EveryNSeconds``).

    The choice is stable: deleting checkpoints it did not keep never changes what it keeps, so
    a restarted manager keeps the same ones.

    Example:
        >>> infos = [CheckpointInfo(step=s, time=60.0 * s) for s in range(1, 8)]
        >>> sorted(EveryNSeconds(seconds=150.0).keep(infos))
        [1, 4, 7]
    """

    seconds: float
    """The period (positive)."""

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or not self.seconds > 0:
            raise InvalidArgumentError(f"the keep period must be a positive number of seconds, got {self.seconds!r}")

    @property
    def label(self) -> str:
        hours = self.seconds / 3600
        return f"keep_checkpoint_every_n_hours={hours:g}"

    def keep(self, checkpoints: Sequence[CheckpointInfo]) -> frozenset[int]:
        kept: list[int] = []
        last = -math.inf
        for info in sorted(checkpoints, key=lambda c: c.step):
            if info.time >= last + self.seconds:
                kept.append(info.step)
                last = info.time
        return frozenset(kept)


@dataclass(frozen=True, slots=True, kw_only=True)
class BestN:
    """Keeps the ``n`` checkpoints with the best scores (lowest for ``"min"``, highest for ``"max"``).

    Checkpoints without a score are not ranked (this policy keeps none of them); a NaN score
    ranks last. Between equal scores the newer step wins.

    Example:
        >>> infos = [CheckpointInfo(step=s, time=0.0, score=l) for s, l in [(1, 0.5), (2, 0.2), (3, 0.9)]]
        >>> sorted(BestN(n=2, mode="min").keep(infos)), sorted(BestN(n=1, mode="max").keep(infos))
        ([1, 2], [3])
    """

    n: int
    """How many of the best checkpoints to keep (at least 1)."""
    mode: str = "min"
    """``"min"``: lower scores are better (a loss); ``"max"``: higher are (an accuracy)."""

    def __post_init__(self) -> None:
        _positive_int("best_n", self.n)
        if self.mode not in ("min", "max"):
            raise InvalidArgumentError(f"best_mode must be 'min' or 'max', got {self.mode!r}")

    @property
    def label(self) -> str:
        return f"best_n={self.n} ({self.mode})"

    def keep(self, checkpoints: Sequence[CheckpointInfo]) -> frozenset[int]:
        sign = 1.0 if self.mode == "min" else -1.0

        def rank(info: CheckpointInfo) -> tuple[bool, float, int]:
            score = float(info.score)  # type: ignore[arg-type]
            return (math.isnan(score), sign * score if not math.isnan(score) else 0.0, -info.step)

        scored = sorted((c for c in checkpoints if c.score is not None), key=rank)
        return frozenset(c.step for c in scored[: self.n])


@dataclass(frozen=True, slots=True, kw_only=True)
class AnyOf:
    """Keeps every checkpoint that at least one of ``policies`` keeps.

    Example:
        >>> infos = [CheckpointInfo(step=s, time=0.0) for s in range(1, 11)]
        >>> sorted(AnyOf(policies=(LatestN(n=2), EveryNSteps(n=4))).keep(infos))
        [4, 8, 9, 10]
    """

    policies: tuple[Any, ...]
    """The policies combined (each with ``label`` and ``keep``)."""

    @property
    def label(self) -> str:
        return " | ".join(p.label for p in self.policies)

    def keep(self, checkpoints: Sequence[CheckpointInfo]) -> frozenset[int]:
        kept: frozenset[int] = frozenset()
        for policy in self.policies:
            kept |= policy.keep(checkpoints)
        return kept


def keep_reasons(policies: Iterable[Any], checkpoints: Sequence[CheckpointInfo]) -> dict[int, tuple[str, ...]]:
    """For each checkpoint's step, the labels of the policies that keep it (empty: it goes).

    Example:
        >>> infos = [CheckpointInfo(step=s, time=0.0) for s in (4, 5, 6)]
        >>> keep_reasons([Latest(), LatestN(n=2), EveryNSteps(n=4)], infos)
        {4: ('keep_every_n_steps=4',), 5: ('max_to_keep=2',), 6: ('latest', 'max_to_keep=2')}
    """
    kept = [(policy.label, policy.keep(checkpoints)) for policy in policies]
    return {c.step: tuple(label for label, steps in kept if c.step in steps) for c in checkpoints}


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerPolicy:
    """A :class:`jaxsaver.CheckpointManager`'s retention settings, as stored beside each checkpoint.

    A checkpoint is kept when any enabled rule keeps it: the latest always, the ``max_to_keep``
    newest, every multiple of ``keep_every_n_steps``, one per ``keep_checkpoint_every_n_hours``,
    and the ``best_n`` best by score. ``max_to_keep=None`` keeps everything.

    Example:
        >>> policy = ManagerPolicy(max_to_keep=1, best_n=2)
        >>> [p.label for p in policy.policies()]
        ['latest', 'max_to_keep=1', 'best_n=2 (min)']
        >>> ManagerPolicy.from_dict(policy.as_dict()) == policy
        True
    """

    max_to_keep: int | None = 5
    """How many of the newest checkpoints to keep; None keeps every checkpoint."""
    keep_every_n_steps: int | None = None
    """Also keep every checkpoint whose step is a multiple of this."""
    keep_checkpoint_every_n_hours: float | None = None
    """Also keep one checkpoint per this many hours (see :class:`EveryNSeconds`)."""
    best_n: int | None = None
    """Also keep this many checkpoints with the best scores."""
    best_mode: str = "min"
    """``"min"`` or ``"max"``: which scores are best."""

    def __post_init__(self) -> None:
        self.policies()  # validates every setting (each policy checks its own)
        if self.best_mode not in ("min", "max"):
            raise InvalidArgumentError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")

    def policies(self) -> tuple[Any, ...]:
        """The enabled policies, :class:`Latest` first. Empty when ``max_to_keep`` is None."""
        if self.max_to_keep is None:
            return ()
        out: list[Any] = [Latest(), LatestN(n=self.max_to_keep)]
        if self.keep_every_n_steps is not None:
            out.append(EveryNSteps(n=self.keep_every_n_steps))
        if self.keep_checkpoint_every_n_hours is not None:
            out.append(EveryNSeconds(seconds=_as_number("keep_checkpoint_every_n_hours", self.keep_checkpoint_every_n_hours) * 3600))
        if self.best_n is not None:
            out.append(BestN(n=self.best_n, mode=self.best_mode))
        return tuple(out)

    def keep(self, checkpoints: Sequence[CheckpointInfo]) -> frozenset[int]:
        """The steps kept (all of them when ``max_to_keep`` is None)."""
        if self.max_to_keep is None:
            return frozenset(c.step for c in checkpoints)
        return AnyOf(policies=self.policies()).keep(checkpoints)

    def reasons(self, checkpoints: Sequence[CheckpointInfo]) -> dict[int, tuple[str, ...]]:
        """Per step, the labels of the rules keeping it (``("keep all",)`` without a limit)."""
        if self.max_to_keep is None:
            return {c.step: ("max_to_keep=None",) for c in checkpoints}
        return keep_reasons(self.policies(), checkpoints)

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-able values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ManagerPolicy:
        """The inverse of :meth:`as_dict`; unknown keys are an error, invalid values too.

        Raises:
            InvalidArgumentError: a key is unknown or a value is not valid.
        """
        if not isinstance(data, Mapping):
            raise InvalidArgumentError(f"a manager policy must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidArgumentError(f"unknown manager policy settings: {', '.join(map(str, unknown))}")
        return cls(**dict(data))


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidArgumentError(f"{name} must be a positive number, got {value!r}")
    return float(value)

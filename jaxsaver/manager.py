"""``CheckpointManager``: a training loop's checkpoints across restarts, with retention policies and metrics.

TF2's ``tf.train.CheckpointManager`` shape with orbax's policies, over :class:`jaxsaver.Saver`.
On construction it reads the directory's ``checkpoint`` state file, so retention applies to what
earlier runs left; checkpoints the state file does not list are reported and deleted only by
:meth:`CheckpointManager.cleanup_untracked`. Steps come from the names (``model-<step>``), so a
directory written by TF1's Saver or :class:`jaxsaver.Saver` is managed too. Each save writes a
JSON sidecar (``model-<step>.metadata.json``: metrics, metadata, score) before its index is
committed, so a visible checkpoint always has it.

Example:
    >>> import tempfile, jax.numpy as jnp
    >>> state = {"w": jnp.zeros(3), "step": 0}
    >>> with CheckpointManager(tempfile.mkdtemp(), state, max_to_keep=2, best_n=1, best_fn="loss") as mgr:
    ...     for step, loss in enumerate([0.5, 0.1, 0.4, 0.3], start=1):
    ...         _ = mgr.save({"w": jnp.full(3, loss), "step": step}, step, metrics={"loss": loss})
    ...     mgr.all_steps(), mgr.best_step(), mgr.metrics(2)
    ([2, 3, 4], 2, {'loss': 0.1})
    >>> restored = mgr.restore()          # the latest
    >>> int(restored["step"])
    4
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxsaver._async import BackgroundWriter, ClosesOnExit
from jaxsaver._errors import (
    CheckpointNotFoundError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
)
from jaxsaver._history import SIDECAR_SUFFIX, encode_sidecar, read_sidecar, scan, sidecar_path, step_of
from jaxsaver._retention import BestN, CheckpointInfo, ManagerPolicy
from jaxsaver._store import resolve
from jaxsaver._retire import delete_checkpoint
from jaxsaver.checkpoint_management import update_checkpoint_state_internal
from jaxsaver.saver import Saver

__all__ = ["CheckpointManager", "CheckpointManagerOptions"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointManagerOptions:
    """What a :class:`CheckpointManager` was asked for (its keyword arguments).

    Retention: a checkpoint is kept when any enabled rule keeps it (see
    :class:`jaxsaver._retention.ManagerPolicy`): the latest always, the ``max_to_keep`` newest,
    every multiple of ``keep_every_n_steps``, one per ``keep_checkpoint_every_n_hours``, the
    ``best_n`` best by ``best_fn``. ``max_to_keep=None`` keeps everything.

    Example:
        >>> CheckpointManagerOptions(max_to_keep=1, best_n=2, best_fn="loss").policy.best_n
        2
    """

    max_to_keep: int | None = 5
    """How many of the newest checkpoints to keep (at least 1); None keeps every checkpoint."""
    keep_checkpoint_every_n_hours: float | None = None
    """Also keep one checkpoint per this many hours."""
    keep_every_n_steps: int | None = None
    """Also keep every checkpoint whose step is a multiple of this."""
    best_n: int | None = None
    """Also keep this many checkpoints with the best ``best_fn(metrics)``."""
    best_fn: Callable[[Mapping[str, Any]], float] | str | None = None
    """The score of a checkpoint's metrics: a function, or the name of one metric."""
    best_mode: str = "min"
    """``"min"`` (a loss) or ``"max"`` (an accuracy): which scores are best."""
    save_interval_steps: int = 1
    """:meth:`CheckpointManager.should_save` is true for multiples of this (unless ``force``)."""
    checkpoint_name: str = "model"
    """Checkpoints are ``<directory>/<checkpoint_name>-<step>``."""
    async_save: bool = False
    """Return from ``save`` once the state is snapshotted; the write, the state file and
    retention run in the background, in order (see ``Saver.save(blocking=False)``)."""

    def __post_init__(self) -> None:
        _ = self.policy  # validates the retention settings
        if self.best_n is not None and self.best_fn is None:
            raise InvalidArgumentError("best_n needs best_fn: a function of the metrics, or a metric name")
        if self.best_fn is not None and not (callable(self.best_fn) or isinstance(self.best_fn, str)):
            raise InvalidArgumentError(f"best_fn must be a function or a metric name, got {self.best_fn!r}")
        interval = self.save_interval_steps
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise InvalidArgumentError(f"save_interval_steps must be a positive integer, got {interval!r}")
        name = self.checkpoint_name
        if not isinstance(name, str) or not name or "/" in name or os.sep in name or name in (".", ".."):
            raise InvalidArgumentError(f"checkpoint_name must be a file name without '/', got {name!r}")

    @property
    def policy(self) -> ManagerPolicy:
        """The retention settings as a pure policy."""
        return ManagerPolicy(
            max_to_keep=self.max_to_keep, keep_every_n_steps=self.keep_every_n_steps,
            keep_checkpoint_every_n_hours=self.keep_checkpoint_every_n_hours,
            best_n=self.best_n, best_mode=self.best_mode,
        )


def _metric_value(name: str, value: Any) -> float | int | None:
    """A metric as a JSON number: Python and numpy numbers, 0-d arrays (JAX's too)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    try:
        array = None if isinstance(value, (bool, str, bytes)) else np.asarray(value)
    except Exception:  # noqa: BLE001 - anything that is not an array is refused below
        array = None
    if array is None or array.shape != () or array.dtype.kind not in "iuf":
        raise InvalidArgumentError(
            f"metric {name!r} must be a real number or a 0-d numeric array, got {type(value).__name__}: {value!r}"
        )
    return array.item()


def _step_int(step: Any) -> int:
    if isinstance(step, (bool, np.bool_)):
        raise InvalidArgumentError(f"step must be an integer, got {step!r}")
    array = np.asarray(step)
    if array.shape != () or array.dtype.kind not in "iu" or int(array) < 0:
        raise InvalidArgumentError(f"step must be a non-negative integer, got {step!r}")
    return int(array)


class CheckpointManager(ClosesOnExit):
    """A directory of checkpoints ``<name>-<step>`` managed across restarts.

    Args:
        directory: where the checkpoints and the ``checkpoint`` state file live (a local path
            or a storage URL). The manager never deletes anything outside it.
        saver_or_template: a :class:`jaxsaver.Saver` (its own ``max_to_keep`` is not used: the
            manager keeps the state file), or a pytree template for a new one. None builds the
            saver from the first state saved.
        **retention and naming**: ``max_to_keep``, ``keep_checkpoint_every_n_hours``,
            ``keep_every_n_steps``, ``best_n``, ``best_fn``, ``best_mode``,
            ``save_interval_steps``, ``checkpoint_name`` and ``async_save`` are the fields of
            :class:`CheckpointManagerOptions` (documented there).
        clock: the time source (seconds since the epoch) for checkpoint times.

    Raises:
        InvalidArgumentError: a setting is invalid (named).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        saver_or_template: Any = None,
        *,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float | None = None,
        keep_every_n_steps: int | None = None,
        best_n: int | None = None,
        best_fn: Callable[[Mapping[str, Any]], float] | str | None = None,
        best_mode: str = "min",
        save_interval_steps: int = 1,
        checkpoint_name: str = "model",
        async_save: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = CheckpointManagerOptions(
            max_to_keep=max_to_keep, keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours,
            keep_every_n_steps=keep_every_n_steps, best_n=best_n, best_fn=best_fn, best_mode=best_mode,
            save_interval_steps=save_interval_steps, checkpoint_name=checkpoint_name, async_save=async_save,
        )
        self._policy = self.options.policy
        self._directory = os.fspath(directory)
        if isinstance(saver_or_template, Saver):
            self._saver = saver_or_template
        else:
            self._saver = Saver(template=saver_or_template, max_to_keep=None)
        self._clock = clock
        self._lock = threading.Lock()
        self._writer = BackgroundWriter(f"manager-{self.options.checkpoint_name}")
        self._in_flight: set[int] = set()
        self._tracked: dict[int, CheckpointInfo] = {}
        self._paths: dict[int, str] = {}  # prefixes spelled otherwise than _prefix(step) (TF1's padded steps)
        self._load()

    # ------------------------------------------------------------------ reading the directory

    def _prefix(self, step: int) -> str:
        """The checkpoint of ``step``: as found on disk (``model-00000005``), else ``model-5``."""
        return self._paths.get(step) or os.path.join(self._directory, f"{self.options.checkpoint_name}-{step}")

    def _score(self, step: int, metrics: Mapping[str, Any] | None) -> float | None:
        best_fn = self.options.best_fn
        if best_fn is None or not metrics:
            return None
        if isinstance(best_fn, str):
            if best_fn not in metrics:
                raise InvalidArgumentError(
                    f"best_fn names the metric {best_fn!r}, which the metrics of step {step} lack "
                    f"(they have: {', '.join(sorted(metrics)) or 'none'})"
                )
            score = metrics[best_fn]
        else:
            score = best_fn(metrics)
        try:
            return float(_metric_value("best_fn(metrics)", score))  # type: ignore[arg-type]
        except TypeError:
            raise InvalidArgumentError(f"best_fn returned {score!r} for step {step}, not a number") from None

    def _load(self) -> None:
        view = scan(self._directory, self.options.checkpoint_name)
        for entry in view.tracked:
            score = None
            try:
                sidecar = read_sidecar(entry.prefix)
            except DataLossError as err:
                logger.warning("Ignoring the metrics of %s: %s", entry.prefix, err)
                sidecar = None
            if sidecar is not None:
                try:
                    score = self._score(entry.step, sidecar.metrics)
                except InvalidArgumentError as err:
                    logger.warning("%s: %s; it is not ranked by best_n", entry.prefix, err)
            self._tracked[entry.step] = CheckpointInfo(step=entry.step, time=entry.time, score=score)
            self._paths[entry.step] = entry.prefix
        if view.missing:
            logger.warning("The state file of %s lists checkpoints that no longer exist (dropped from it at the "
                           "next save): %s", self._directory, ", ".join(view.missing))
        if view.foreign:
            logger.warning("The state file of %s lists checkpoints this manager does not manage (outside the "
                           "directory or not named %s-<step>; dropped from the state file at the next save, "
                           "never deleted): %s", self._directory, self.options.checkpoint_name, ", ".join(view.foreign))
        if view.untracked:
            logger.warning("%d checkpoint(s) in %s are not listed in its state file and will not be deleted; "
                           "CheckpointManager.cleanup_untracked() removes those named %s-<step>: %s",
                           len(view.untracked), self._directory, self.options.checkpoint_name,
                           ", ".join(view.untracked))
        if view.leftovers:
            logger.warning("%d file(s) in %s belong to saves that never committed (no .index); "
                           "CheckpointManager.cleanup_untracked() removes them: %s",
                           len(view.leftovers), self._directory, ", ".join(view.leftovers))

    # ------------------------------------------------------------------ queries

    @property
    def directory(self) -> str:
        """The managed directory."""
        return self._directory

    @property
    def saver(self) -> Saver:
        """The :class:`jaxsaver.Saver` writing and reading the checkpoints."""
        return self._saver

    def all_steps(self) -> list[int]:
        """The steps of the committed checkpoints kept, in increasing order."""
        with self._lock:
            return sorted(self._tracked)

    def latest_step(self) -> int | None:
        """The highest committed step, or None when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The committed step with the best score, or None (no ``best_fn`` or no metrics)."""
        if self.options.best_fn is None:
            return None
        with self._lock:
            best = BestN(n=1, mode=self.options.best_mode).keep(list(self._tracked.values()))
        return next(iter(best), None)

    def checkpoint_path(self, step: int) -> str:
        """The prefix of the checkpoint of ``step`` (whether or not it exists)."""
        return self._prefix(_step_int(step))

    def should_save(self, step: int) -> bool:
        """Whether ``save(state, step)`` would save: ``step`` is a multiple of
        ``save_interval_steps`` and after every checkpoint saved or being saved."""
        step = _step_int(step)
        with self._lock:
            newest = max(self._tracked.keys() | self._in_flight, default=None)
        if newest is not None and step <= newest:
            return False
        return step % self.options.save_interval_steps == 0

    def metrics(self, step: int) -> dict[str, Any] | None:
        """The metrics stored with the checkpoint of ``step`` (None if it has no sidecar).

        Raises:
            CheckpointNotFoundError: no committed checkpoint has this step.
            DataLossError: its sidecar is corrupt.
        """
        sidecar = read_sidecar(self._committed(step))
        return None if sidecar is None else sidecar.metrics

    def metadata(self, step: int) -> Any:
        """The metadata stored with the checkpoint of ``step`` (None if none was given)."""
        sidecar = read_sidecar(self._committed(step))
        return None if sidecar is None else sidecar.metadata

    def _committed(self, step: int) -> str:
        step = _step_int(step)
        with self._lock:
            known = step in self._tracked
            steps = sorted(self._tracked)
        if not known:
            raise CheckpointNotFoundError(
                f"no checkpoint of step {step} in {self._directory} (steps: {steps or 'none'})"
            )
        return self._prefix(step)

    # ------------------------------------------------------------------ save

    def save(
        self,
        state: Any,
        step: int,
        *,
        metrics: Mapping[str, Any] | None = None,
        metadata: Any = None,
        force: bool = False,
    ) -> str | None:
        """Saves ``state`` as the checkpoint of ``step`` when :meth:`should_save` says so.

        The sidecar (metrics, metadata) is written before the checkpoint's index; after the
        commit the state file lists every checkpoint kept, then the others are deleted. With
        ``async_save`` this returns once the state is snapshotted and the rest runs in the
        background; a failure there is raised by the next call that waits (``save``,
        :meth:`wait_until_finished`, :meth:`close`).

        Args:
            state: the pytree to save.
            step: the training step (a non-negative integer), which names the checkpoint.
            metrics: numbers (Python, numpy or 0-d JAX arrays), stored and ranked by ``best_fn``.
            metadata: any JSON value (tuples are read back as lists).
            force: save even if ``step`` is not a multiple of ``save_interval_steps``.

        Returns:
            The checkpoint prefix, or None when :meth:`should_save` is false (and not ``force``).

        Raises:
            InvalidArgumentError: ``force`` with a step not after the latest checkpoint's (a
                checkpoint is never overwritten), a metric or the metadata is not JSON, or
                ``best_fn`` fails on the metrics.
        """
        self._writer.wait()
        step = _step_int(step)
        if not self.should_save(step):
            with self._lock:
                newest = max(self._tracked.keys() | self._in_flight, default=None)
            if not force:
                logger.info("Not saving step %d (save_interval_steps=%d, latest step %s)",
                            step, self.options.save_interval_steps, newest)
                return None
            if newest is not None and step <= newest:
                raise InvalidArgumentError(
                    f"cannot save step {step}: it is not after the latest checkpoint's step {newest} in "
                    f"{self._directory} (checkpoints are never overwritten)"
                )
        values = {name: _metric_value(name, v) for name, v in (metrics or {}).items()} if metrics else None
        score = self._score(step, values)
        if self.options.best_n is not None and score is None:
            logger.warning("Step %d has no metrics: best_n=%d cannot rank it", step, self.options.best_n)
        now = float(self._clock())
        sidecar = encode_sidecar(step=step, time=now, metrics=values, metadata=metadata, score=score,
                                 policy=self._policy)
        prefix = self._prefix(step)
        store, key = resolve(self._directory)
        store.makedirs(key)
        info = CheckpointInfo(step=step, time=now, score=score)
        with self._lock:
            self._in_flight.add(step)
        try:
            result = self._saver.save(state, prefix, write_state=False, blocking=not self.options.async_save,
                                      extra_sidecars={SIDECAR_SUFFIX: sidecar})
            if result is None:
                raise FailedPreconditionError(
                    f"the saver of {self._directory} has no variables to save (allow_empty=True): no checkpoint written"
                )
        except BaseException:
            with self._lock:
                self._in_flight.discard(step)
            raise
        if not self.options.async_save:
            self._after_commit(info)
            return prefix

        def finish() -> str:
            try:
                result.result()  # the save's own failure, if any, is this job's
            except BaseException:
                with self._lock:
                    self._in_flight.discard(step)
                raise
            self._after_commit(info)
            return prefix

        self._writer.submit(finish, prefix)
        return prefix

    def _after_commit(self, info: CheckpointInfo) -> None:
        """The state file lists what the policies keep, then the rest is deleted (TF's order)."""
        with self._lock:
            self._in_flight.discard(info.step)
            self._tracked[info.step] = info
            keep = self._policy.keep(list(self._tracked.values()))
            doomed = sorted(step for step in self._tracked if step not in keep)
            doomed_paths = [self._prefix(step) for step in doomed]
            for step in doomed:
                del self._tracked[step]
                self._paths.pop(step, None)
            kept = [self._prefix(c.step) for c in sorted(self._tracked.values(), key=lambda c: c.step)]
            times = [c.time for c in sorted(self._tracked.values(), key=lambda c: c.step)]
        update_checkpoint_state_internal(
            save_dir=self._directory,
            model_checkpoint_path=kept[-1],
            all_model_checkpoint_paths=kept,
            all_model_checkpoint_timestamps=times,
            save_relative_paths=True,
        )
        for prefix in doomed_paths:
            logger.info("Deleting checkpoint %s (kept by no retention policy)", prefix)
            self._remove(prefix)

    def _remove(self, prefix: str) -> None:
        """Deletes one checkpoint of this directory: its index first (it stops being a checkpoint),
        then its data and ``.meta``, then its sidecar."""
        store, key = resolve(prefix)
        _, dir_key = resolve(self._directory)
        if (os.path.normpath(store.dirname(key)) != os.path.normpath(dir_key)
                or step_of(store.basename(key), self.options.checkpoint_name) is None):
            raise FailedPreconditionError(f"refusing to delete {prefix}: not a checkpoint of {self._directory}")
        delete_checkpoint(prefix, self._directory)  # exact names only: no glob, never outside
        store.delete(resolve(sidecar_path(prefix))[1])

    # ------------------------------------------------------------------ restore

    def restore(self, step: int | None = None, target: Any = None) -> Any:
        """Restores the checkpoint of ``step`` (the latest by default), shaped like ``target`` or
        the saver's template; waits for saves in flight first.

        Raises:
            CheckpointNotFoundError: there is no checkpoint, or none of that step (the steps
                there are listed).
        """
        self.wait_until_finished()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointNotFoundError(f"no checkpoint to restore in {self._directory}")
        return self._saver.restore(self._committed(step), target=target)

    def restore_or_initialize(self, init_fn: Callable[[], Any], target: Any = None) -> Any:
        """The latest checkpoint restored, or ``init_fn()`` when the directory has none.

        Example:
            >>> import tempfile, jax.numpy as jnp
            >>> mgr = CheckpointManager(tempfile.mkdtemp(), {"w": jnp.zeros(2)})
            >>> mgr.restore_or_initialize(lambda: {"w": jnp.ones(2)})["w"].tolist()
            [1.0, 1.0]
        """
        if self.latest_step() is None:
            return init_fn()
        return self.restore(target=target)

    # ------------------------------------------------------------------ untracked checkpoints

    def untracked(self) -> list[str]:
        """Checkpoints in the directory that the state file does not list (the manager keeps
        them and never deletes them, except through :meth:`cleanup_untracked`)."""
        self.wait_until_finished()
        return list(scan(self._directory, self.options.checkpoint_name).untracked)

    def cleanup_untracked(self) -> list[str]:
        """Deletes the untracked checkpoints named ``<checkpoint_name>-<step>`` and the leftovers
        of saves that never committed; returns what was removed (prefixes and files).

        Checkpoints of other names in the directory are left alone (logged).
        """
        self.wait_until_finished()
        view = scan(self._directory, self.options.checkpoint_name)
        removed = []
        for prefix in view.untracked:
            if step_of(os.path.basename(prefix), self.options.checkpoint_name) is None:
                logger.info("Leaving %s: not named %s-<step>", prefix, self.options.checkpoint_name)
                continue
            self._remove(prefix)
            removed.append(prefix)
        for path in view.leftovers:
            store, key = resolve(path)
            store.delete(key)
            removed.append(path)
        for path in removed:
            logger.info("Removed untracked %s", path)
        return removed

    # ------------------------------------------------------------------ lifetime

    def wait_until_finished(self) -> None:
        """Waits for the saves in flight; raises the first failure not yet raised."""
        try:
            self._writer.wait()
        finally:
            self._saver.wait_until_finished()

    def close(self) -> None:
        """Waits for the saves in flight (raising a failure) and stops the worker threads."""
        try:
            self._writer.close()
        finally:
            self._saver.close()

    def __repr__(self) -> str:
        return (f"CheckpointManager({self._directory!r}, steps={self.all_steps()}, "
                f"policy={self._policy.as_dict()})")

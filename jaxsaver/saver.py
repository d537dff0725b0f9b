"""``Saver``: TensorFlow's ``tf.compat.v1.train.Saver`` for JAX pytrees.

Same arguments, defaults, file names and edge cases as the seed, adapted where JAX has no
sessions: ``save`` takes the values to save, and ``restore`` returns the restored pytree
(JAX values are immutable) with the template's structure, dtypes and shardings.

Example:
    >>> import os, tempfile, jax.numpy as jnp
    >>> state = {"params": {"w": jnp.ones((2, 3))}, "step": 3}
    >>> saver = Saver(template=state, max_to_keep=2)
    >>> directory = tempfile.mkdtemp()
    >>> prefix = saver.save(state, os.path.join(directory, "model"), global_step=3)
    >>> os.path.basename(prefix)
    'model-3'
    >>> from jaxsaver import latest_checkpoint
    >>> restored = saver.restore(latest_checkpoint(directory))
    >>> restored["step"], restored["params"]["w"].shape
    (3, (2, 3))
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from jaxsaver._proto import meta_graph_pb2, saver_pb2
from jaxsaver import _multiprocess, _pipeline, distributed
from jaxsaver._async import BackgroundWriter, ClosesOnExit, SaveHandle
from jaxsaver._store import resolve
from jaxsaver._options import SaverOptions
from jaxsaver.typing import PathLike, PyTree, StepLike
from jaxsaver._positional import split_positional
from jaxsaver._errors import CheckpointNotFoundError, FailedPreconditionError, InvalidArgumentError, JaxsaverError, NotFoundError
from jaxsaver._progress import Tracker
from jaxsaver._retention import RetentionPolicy, initial_state, record_checkpoint, with_last_checkpoints
from jaxsaver._retention import absorb_checkpoints
from jaxsaver._store import cleanup, in_flight
from jaxsaver._retire import delete_checkpoint, inside, read_journal, remove_journal, write_journal
from jaxsaver.builder import SaverBuilder, SaverGraph
from jaxsaver.checkpoint_management import (
    get_checkpoint_mtimes,
    get_checkpoint_state,
    meta_graph_filename,
    update_checkpoint_state_internal,
)
from jaxsaver.saveables import LeafKind, Saveable, flatten_values, saveables_from_pytree, unflatten_like

__all__ = ["Saver", "restore_as_numpy"]

logger = logging.getLogger(__name__)



def _strip_scope(name: str, scope: str) -> str:
    return name[len(scope) + 1 :] if name.startswith(scope + "/") else name


def _prepend_scope(name: str, scope: str | None) -> str:
    return f"{scope}/{name}" if scope else name


def _global_step_int(global_step: Any) -> int:
    if isinstance(global_step, bool):  # the seed accepts any numbers.Integral, bool included
        return int(global_step)
    array = np.asarray(global_step)
    if array.shape != () or array.dtype.kind not in "iu":
        raise InvalidArgumentError(
            f"global_step must be an integer or a 0-d integer array, got {global_step!r}"
        )
    return int(array)


def _target_sharding(saveable: Saveable, leaf: Any) -> Any:
    """The sharding to restore ``saveable`` with, taken from a target leaf where it has one.

    For a PRNG key this is the sharding of its key data (what the checkpoint stores).
    """
    if saveable.kind == LeafKind.JAX_ARRAY:
        return getattr(leaf, "sharding", None)
    if saveable.kind == LeafKind.PRNG_KEY and isinstance(leaf, jax.Array):
        return jax.random.key_data(leaf).sharding
    return saveable.specs[0].sharding


def _remove_quietly(path: str) -> None:
    """Deletes a sidecar of a failed save (its absence is fine)."""
    store, key = resolve(path)
    try:
        store.delete(key)
    except Exception as err:  # the save's own error is the one to raise
        logger.warning("Could not remove %s after a failed save: %s", path, err)


def _previous_meta(location: _pipeline.Location, meta_file: str) -> bytes | None:
    """The ``.meta`` of the checkpoint a save is about to overwrite, if there is one."""
    store, key = resolve(meta_file)
    try:
        if location.store.exists(f"{location.key}.index") and store.exists(key):
            return store.read(key)
    except JaxsaverError:
        pass
    return None


def _restore_meta(meta_file: str, old: bytes | None) -> None:
    """After a failed save: the overwritten checkpoint's ``.meta`` back, or none at all."""
    if old is None:
        _remove_quietly(meta_file)
        return
    store, key = resolve(meta_file)
    try:
        store.write(key, old)
    except Exception as err:  # the save's own error is the one to raise
        logger.warning("Could not put back %s after a failed save: %s", meta_file, err)


def _remove_journal_quietly(directory: str, latest_filename: str) -> None:
    try:
        remove_journal(directory, latest_filename)
    except Exception as err:  # the save's own outcome is what the caller hears
        logger.warning("Could not remove the retention journal in %s: %s", directory, err)


def restore_as_numpy(save_path: PathLike) -> dict[str, Any]:
    """Every tensor of a checkpoint as a nested dict of numpy arrays, split on ``/``.

    Needs no template and no devices. ``save_path`` is a prefix or a directory (its latest
    checkpoint). Names that are both a tensor and a prefix of other names
    (``a`` and ``a/b``) cannot nest; the tensor is then kept under the key ``"a"`` and the
    deeper names under ``"a/..."`` flat keys.
    """
    out: dict[str, Any] = {}
    with _pipeline.open_checkpoint(save_path) as reader:
        for name in reader.keys():
            value = reader.get_tensor(name)
            parts = name.split("/")
            node: Any = out
            for part in parts[:-1]:
                node = node.get(part, {})
                if not isinstance(node, dict):
                    break
            nestable = all(parts) and isinstance(node, dict) and parts[-1] not in node
            if not nestable:
                out[name] = value
                continue
            node = out
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
    return out


class Saver(ClosesOnExit):
    """Saves and restores a pytree as TensorFlow V2 checkpoints (``tf.compat.v1.train.Saver``).

    Args:
        var_list: what to save: None (every leaf of ``template``), a dict
            ``{checkpoint_name: leaf_or_subtree}``, or a list of leaves/subtrees of ``template``.
            Without ``template``, any other pytree (a ``TrainState``, ``nnx.State``, dataclass,
            optax state, nested dict) passed here is the template: ``Saver(state)``.
        template: the pytree whose structure, dtypes and shardings saves and restores follow.
            Without a template or var_list the saver is built from the first value it saves.
        reshape: allow restoring a tensor into a leaf of another shape with as many elements.
        sharded: write one bundle per device (and per shard) and merge them.
        max_to_keep: how many recent checkpoints to keep (None or 0: all).
        keep_checkpoint_every_n_hours: additionally keep one checkpoint per this many hours.
        name: the graph's name scope (default ``"save"``).
        restore_sequentially: read tensors one at a time (lower peak memory).
        saver_def: recreate a saver from a ``SaverDef``.
        builder: a :class:`SaverBuilder` (subclass) to build the graph.
        defer_build: build later with :meth:`build`.
        allow_empty: an empty saver is a no-op instead of an error.
        pad_step_number: ``model-00000005`` instead of ``model-5``.
        save_relative_paths: write relative paths into the ``checkpoint`` state file.
        filename: the default checkpoint prefix of the graph's filename placeholder.
        clock: the time source (seconds since the epoch), for retention decisions.
        snapshot: how asynchronous saves (``save(..., blocking=False)``) hold their bytes:
            ``"host"`` or ``"device"`` (see :class:`SaverOptions`).
        object_graph: also write TF2's object graph, for ``tf.train.Checkpoint`` (see
            :mod:`jaxsaver.interop.tf2`).
        barrier_timeout_s: in a multi-process program, how long each process waits for the
            others at each step of a save (default ``JAXSAVER_BARRIER_TIMEOUT_S`` or 300 s).
    """

    def __init__(
        self,
        var_list: PyTree | None = None,
        *,
        template: PyTree | None = None,
        reshape: bool = False,
        sharded: bool = False,
        max_to_keep: int | None = 5,
        keep_checkpoint_every_n_hours: float = 10000.0,
        name: str | None = None,
        restore_sequentially: bool = False,
        saver_def: saver_pb2.SaverDef | None = None,
        builder: SaverBuilder | None = None,
        defer_build: bool = False,
        allow_empty: bool = False,
        pad_step_number: bool = False,
        save_relative_paths: bool = False,
        filename: str | None = None,
        clock: Callable[[], float] = time.time,
        snapshot: str = "host",
        object_graph: bool = False,
        barrier_timeout_s: float | None = None,
    ) -> None:
        var_list, template = split_positional(var_list, template)  # Saver(train_state) is its template
        if defer_build and var_list:
            raise InvalidArgumentError(
                "If `var_list` is provided then build cannot be deferred. "
                "Either set defer_build=False or var_list=None."
            )
        if saver_def is not None and not isinstance(saver_def, saver_pb2.SaverDef):
            raise InvalidArgumentError(f"saver_def must be a saver_pb2.SaverDef: {saver_def}")
        self._var_list = var_list
        self._template = template
        self.options = SaverOptions(
            reshape=reshape, sharded=sharded, max_to_keep=max_to_keep,
            keep_checkpoint_every_n_hours=keep_checkpoint_every_n_hours, name=name,
            restore_sequentially=restore_sequentially, allow_empty=allow_empty,
            pad_step_number=pad_step_number, save_relative_paths=save_relative_paths, filename=filename,
            snapshot=snapshot, object_graph=object_graph, barrier_timeout_s=barrier_timeout_s,
        )
        self._builder = builder
        self._meta_graph: dict[str, Any] = {}
        self._defer_build = defer_build
        self._background = BackgroundWriter(name or "save")
        self._clock = clock
        self._is_built = False
        self._is_empty: bool | None = None
        self._saveables: tuple[Saveable, ...] = ()
        self._graph: SaverGraph | None = None
        self.saver_def: saver_pb2.SaverDef | None = None
        if saver_def is not None:
            self.saver_def = saver_pb2.SaverDef()
            self.saver_def.CopyFrom(saver_def)
            if name:
                for field in ("filename_tensor_name", "save_tensor_name", "restore_op_name"):
                    setattr(self.saver_def, field, _prepend_scope(getattr(self.saver_def, field), name))
            self._check_saver_def()
            self.options = dataclasses.replace(
                self.options, sharded=self.saver_def.sharded, max_to_keep=self.saver_def.max_to_keep,
                keep_checkpoint_every_n_hours=self.saver_def.keep_checkpoint_every_n_hours,
            )
        self._retention = initial_state(self._policy(), self._clock())
        if not defer_build and (template is not None or var_list is not None):
            self.build()

    # ------------------------------------------------------------------ building

    def _policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            max_to_keep=self.options.max_to_keep,
            keep_checkpoint_every_n_hours=self.options.keep_checkpoint_every_n_hours,
        )

    def _check_saver_def(self) -> None:
        if not self.saver_def.save_tensor_name:
            raise InvalidArgumentError(f"saver_def must specify the save_tensor_name: {self.saver_def}")
        if not self.saver_def.restore_op_name:
            raise InvalidArgumentError(f"saver_def must specify the restore_op_name: {self.saver_def}")

    def build(self, template: PyTree | None = None) -> None:
        """Builds the graph from the template (or ``template``) and var_list; idempotent."""
        if self._is_built:
            return
        if template is not None:
            self._template = template
        saveables = self._collect_saveables()
        if not saveables:
            if self.options.allow_empty:
                self._is_empty = True
                self._is_built = True
                return
            raise InvalidArgumentError("No variables to save")
        self._is_empty = False
        self._saveables = saveables
        if self._builder is None:
            self._builder = SaverBuilder()
        options = self.options
        if self.saver_def is not None:
            options = dataclasses.replace(options, name=self.saver_def.filename_tensor_name.rsplit("/", 1)[0])
        self._graph, built_def = self._builder.build(saveables, options)
        if self.saver_def is None:
            self.saver_def = built_def
        self._is_built = True
        self._retention = initial_state(self._policy(), self._clock())

    def _collect_saveables(self) -> tuple[Saveable, ...]:
        """The saveables of the template and var_list (a saver from a ``.meta`` has them recorded)."""
        if self._template is None and self._var_list is None:
            return ()
        return tuple(saveables_from_pytree(self._template, self._var_list))

    @property
    def graph(self) -> SaverGraph | None:
        """The built :class:`SaverGraph` (None until built)."""
        return self._graph

    @property
    def saveables(self) -> tuple[Saveable, ...]:
        return self._saveables

    @property
    def builder(self) -> SaverBuilder | None:
        return self._builder

    def as_saver_def(self) -> saver_pb2.SaverDef | None:
        """The ``SaverDef`` describing this saver."""
        return self.saver_def

    def to_proto(self, export_scope: str | None = None) -> saver_pb2.SaverDef | None:
        """The ``SaverDef`` with ``export_scope`` stripped (None if a name is outside it)."""
        if self.saver_def is None:
            return None
        if export_scope is None:
            return self.saver_def
        names = (self.saver_def.filename_tensor_name, self.saver_def.save_tensor_name, self.saver_def.restore_op_name)
        if not all(n.startswith(export_scope) for n in names):
            return None
        out = saver_pb2.SaverDef()
        out.CopyFrom(self.saver_def)
        out.filename_tensor_name = _strip_scope(out.filename_tensor_name, export_scope)
        out.save_tensor_name = _strip_scope(out.save_tensor_name, export_scope)
        out.restore_op_name = _strip_scope(out.restore_op_name, export_scope)
        return out

    @staticmethod
    def from_proto(saver_def: saver_pb2.SaverDef, import_scope: str | None = None, *, template: Any = None) -> Saver:
        """A saver recreated from a ``SaverDef`` (and optionally a template)."""
        return Saver(saver_def=saver_def, name=import_scope, template=template)

    # ------------------------------------------------------------------ retention state

    @property
    def last_checkpoints(self) -> list[str]:
        """The checkpoints this saver keeps track of, oldest first."""
        return list(self._retention.paths)

    def set_last_checkpoints(self, last_checkpoints: list[str]) -> None:
        """Replaces the tracked list (timestamps +inf: never removed by the hours rule)."""
        assert isinstance(last_checkpoints, list)
        self._retention = with_last_checkpoints(self._retention, last_checkpoints)

    def set_last_checkpoints_with_time(self, last_checkpoints_with_time: list[tuple[str, float]]) -> None:
        """Replaces the tracked list with ``(path, timestamp)`` pairs."""
        assert isinstance(last_checkpoints_with_time, list)
        self._retention = with_last_checkpoints(self._retention, last_checkpoints_with_time)

    def recover_last_checkpoints(self, checkpoint_paths: list[str]) -> None:
        """Tracks the given checkpoints that still exist, timestamped by their mtimes."""
        pairs = []
        for path in checkpoint_paths:
            mtimes = get_checkpoint_mtimes([path])
            if mtimes:
                pairs.append((path, mtimes[0]))
        self.set_last_checkpoints_with_time(pairs)

    # ------------------------------------------------------------------ save

    def save(
        self,
        values: PyTree,
        save_path: PathLike,
        global_step: StepLike | None = None,
        latest_filename: str | None = None,
        meta_graph_suffix: str = "meta",
        write_meta_graph: bool = True,
        write_state: bool = True,
        *,
        blocking: bool = True,
        extra_sidecars: dict[str, bytes] | None = None,
        progress: Any = None,
    ) -> str | SaveHandle | None:
        """Saves ``values`` (a pytree shaped like the template) to a checkpoint.

        A save first waits for the saves still in flight (raising a failure of theirs nobody
        collected), so at most one snapshot is held. With ``blocking=False`` it returns as soon as
        the snapshot is taken (see the saver's ``snapshot`` option): the caller may then donate or
        overwrite the arrays. Writing, merging, committing the index, the state file and
        retention run in the background, in order; a blocking save is the same save followed by
        ``result()``.

        Args:
            blocking: wait until the checkpoint is committed (the default), or return a
                :class:`SaveHandle` once the snapshot is taken.
            extra_sidecars: ``{suffix: bytes}`` files written at ``<prefix>.<suffix>`` with the
                ``.meta``, before the index is committed (so a visible checkpoint has them), and
                removed if the save fails (:class:`jaxsaver.CheckpointManager`'s metadata).
            progress: None (the default: nothing), True (a tqdm bar when the save writes at
                least 64 MiB; ``pip install jaxsaver[progress]``) or a callable receiving a
                :class:`ProgressEvent` as the bytes are written (from the writing threads).

        Returns:
            The checkpoint prefix (``save_path`` or ``save_path-<step>``), None if the saver is
            empty; a :class:`SaveHandle` (``done()``, ``result()``, ``exception()``) when not
            ``blocking``.

        Raises:
            FailedPreconditionError: (a ``RuntimeError``) ``defer_build=True`` and :meth:`build` was not called.
            InvalidArgumentError: (a ``ValueError``) ``latest_filename`` has path components or collides with ``save_path``;
                the parent directory does not exist.
        """
        self._background.wait()
        if not self._is_built:
            if self._defer_build:
                raise FailedPreconditionError("`build()` should be called before save if defer_build==True")
            self.build(values)
        if latest_filename is None:
            latest_filename = "checkpoint"
        if os.path.split(latest_filename)[0]:
            raise InvalidArgumentError("'latest_filename' must not contain path components")
        save_path = os.fspath(save_path) if not isinstance(save_path, bytes) else save_path.decode()
        if global_step is not None:
            step = _global_step_int(global_step)
            checkpoint_file = f"{save_path}-{step:08d}" if self.options.pad_step_number else f"{save_path}-{step}"
        else:
            checkpoint_file = save_path
            if os.path.basename(save_path) == latest_filename and not self.options.sharded:
                raise InvalidArgumentError(
                    f"'latest_filename' collides with 'save_path': '{latest_filename}' and '{save_path}'"
                )
        if self._is_empty:
            if write_meta_graph:
                self.export_meta_graph(meta_graph_filename(checkpoint_file, meta_graph_suffix=meta_graph_suffix))
            return None
        location = _pipeline.locate_for_save(checkpoint_file)
        # A saver built from a template (or its first values) writes every leaf it is given or
        # refuses: extra leaves are listed, never dropped. A var_list saver saves a subset.
        leaves = flatten_values(values, self._saveables, allow_extra=self._var_list is not None)
        saveables = self._saveables
        if self.options.object_graph:
            from jaxsaver.interop._object_graph import with_object_graph

            saveables, leaves = with_object_graph(saveables, leaves, None if global_step is None else step)
        meta_file = meta_graph_filename(checkpoint_file, meta_graph_suffix=meta_graph_suffix)
        sidecars = {f"{checkpoint_file}.{suffix}": data for suffix, data in (extra_sidecars or {}).items()}
        coordination = distributed.current(location.key, location.path, self.options.barrier_timeout_s)
        if coordination is not None:
            return self._save_distributed(
                coordination, saveables, leaves, location, meta_file, sidecars, write_meta_graph=write_meta_graph,
                write_state=write_state, save_path=save_path, latest_filename=latest_filename,
                meta_graph_suffix=meta_graph_suffix, blocking=blocking, progress=progress,
            )
        plan, source = _pipeline.snapshot(
            self._builder, saveables, leaves, location,
            sharded=self.options.sharded, mode=None if blocking else self.options.snapshot,
        )
        source.progress = tracker = Tracker.of(
            progress, operation="save", checkpoint=location.path, bytes_total=source.nbytes,
            tensors_total=source.num_tensors,
        )

        def finish() -> str:
            _pipeline.make_parent(location)
            directory = os.path.dirname(save_path)
            # While the save is in flight its prefix is marked (jaxsaver._store.leftovers); leftovers
            # of earlier crashed saves in the directory are removed once provably stale.
            if location.store.atomic_rename:
                cleanup(location.store.dirname(location.key) or ".")
            with in_flight(location.path):
                if write_state:
                    self._recover(directory, latest_filename, meta_graph_suffix, location.path)
                    write_journal(directory, latest_filename, adopt=[location.path])
                old_meta = _previous_meta(location, meta_file) if write_meta_graph else None
                try:
                    if write_meta_graph:  # sidecars before the index commit: a visible checkpoint has them
                        self.export_meta_graph(meta_file)
                    for path, data in sidecars.items():
                        store, key = resolve(path)
                        store.write(key, data)
                    prefix = _pipeline.write(self._builder, plan, source)
                except BaseException:
                    if write_meta_graph:
                        _restore_meta(meta_file, old_meta)  # a checkpoint overwritten keeps its own
                    for path in sidecars:
                        _remove_quietly(path)
                    if write_state:
                        _remove_journal_quietly(directory, latest_filename)
                    if tracker is not None:
                        tracker.close()
                    raise
            if write_state:
                self._update_state(prefix, save_path, latest_filename, meta_graph_suffix)
            if tracker is not None:
                tracker.finish()
            return prefix

        handle = self._background.submit(finish, location.path)
        return handle.result() if blocking else handle

    def _save_distributed(
        self, coordination: distributed.Coordination, saveables: Sequence[Saveable], leaves: list[Any],
        location: _pipeline.Location, meta_file: str, sidecars: dict[str, bytes], *, write_meta_graph: bool,
        write_state: bool, save_path: str, latest_filename: str, meta_graph_suffix: str, blocking: bool,
        progress: Any = None,
    ) -> str | SaveHandle:
        """``save`` in a multi-process program (see :mod:`jaxsaver._multiprocess`): every process
        writes what it owns; process 0 writes the ``.meta``, commits, and keeps the state file."""
        leader = coordination.leader
        try:
            plan, source, digests = _multiprocess.snapshot(
                self._builder, saveables, leaves, location, leader=leader,
                mode=None if blocking else self.options.snapshot,
            )
        except BaseException as err:  # the others would otherwise wait for this process
            coordination.fail("parts", err)
            coordination.done()
            raise
        source.progress = tracker = Tracker.of(  # this process's bytes
            progress, operation="save", checkpoint=location.path, bytes_total=source.nbytes,
            tensors_total=source.num_tensors,
        )

        def record() -> None:  # process 0: the state file and retention deletes
            if write_state:
                self._update_state(location.path, save_path, latest_filename, meta_graph_suffix)

        def finish() -> str:
            try:
                try:
                    _pipeline.make_parent(location)
                    if leader:  # sidecars before the index commit
                        if write_meta_graph:
                            self.export_meta_graph(meta_file)
                        for path, data in sidecars.items():
                            store, key = resolve(path)
                            store.write(key, data)
                except BaseException as err:
                    coordination.fail("parts", err)
                    coordination.done()
                    raise
                prefix = _multiprocess.write_distributed(
                    self._builder, plan, source, coordination, digests, on_commit=record
                )
            except BaseException:
                if leader:
                    for path in ([meta_file] if write_meta_graph else []) + list(sidecars):
                        _remove_quietly(path)
                if tracker is not None:
                    tracker.close()
                raise
            if write_state and not leader:  # the same retention view on every process
                self._retention, _ = record_checkpoint(self._policy(), self._retention, prefix, self._clock())
            if tracker is not None:
                tracker.finish()
            return prefix

        handle = self._background.submit(finish, location.path)
        return handle.result() if blocking else handle

    # ------------------------------------------------------------------ background saves

    def wait_until_finished(self) -> None:
        """Waits for every asynchronous save; raises the first failure nobody collected."""
        self._background.wait()

    def close(self) -> None:
        """Waits for every asynchronous save (raising a failure) and stops the worker thread."""
        self._background.close()

    def _update_state(self, model_checkpoint_path: str, save_path: str, latest_filename: str,
                      meta_graph_suffix: str) -> None:
        """The save's last stages: the ``checkpoint`` state file, then retention deletes."""
        self._retention, doomed = record_checkpoint(
            self._policy(), self._retention, model_checkpoint_path, self._clock()
        )
        directory = os.path.dirname(save_path)
        if doomed:  # recorded before the state file, so a crash cannot leave them undeleted
            write_journal(directory, latest_filename, adopt=[model_checkpoint_path],
                          delete=[p for p in doomed if inside(p, directory)])
        update_checkpoint_state_internal(
            save_dir=directory,
            model_checkpoint_path=model_checkpoint_path,
            all_model_checkpoint_paths=self.last_checkpoints,
            latest_filename=latest_filename,
            save_relative_paths=self.options.save_relative_paths,
        )
        for prefix in doomed:
            try:  # only the checkpoint's own files, and only inside the directory (logged if not)
                delete_checkpoint(prefix, directory, meta_graph_suffix)
            except Exception as err:  # the seed ignores failures here too
                logger.warning("Ignoring: %s", err)
        _remove_journal_quietly(directory, latest_filename)

    def _recover(self, directory: str, latest_filename: str, meta_graph_suffix: str, target: str) -> None:
        """Finishes what a crashed save's journal says it left undone (see :mod:`jaxsaver._retire`)."""
        journal = read_journal(directory, latest_filename)
        if journal is None:
            return
        try:
            state = get_checkpoint_state(directory, latest_filename)
        except InvalidArgumentError:
            state = None
        listed = set()
        if state is not None:
            listed = {os.path.realpath(p) for p in [state.model_checkpoint_path, *state.all_model_checkpoint_paths]}
        tracked = {os.path.realpath(p) for p in self.last_checkpoints}
        found = []
        for name in journal["adopt"]:
            prefix = os.path.join(directory, name)
            real = os.path.realpath(prefix)
            if real not in listed and real not in tracked and real != os.path.realpath(target):
                mtimes = get_checkpoint_mtimes([prefix])
                if mtimes:
                    found.append((prefix, mtimes[0]))
        self._retention, doomed = absorb_checkpoints(self._policy(), self._retention, found)
        for name in journal["delete"]:
            prefix = os.path.join(directory, name)
            real = os.path.realpath(prefix)
            if real not in listed and real not in tracked and real != os.path.realpath(target):
                doomed.append(prefix)
        if found and self.last_checkpoints:
            # The adoption is made durable before the journal goes: the save that follows writes
            # a journal of its own, and a crash then must not leave the adopted checkpoint unlisted.
            update_checkpoint_state_internal(
                save_dir=directory,
                model_checkpoint_path=self.last_checkpoints[-1],
                all_model_checkpoint_paths=self.last_checkpoints,
                latest_filename=latest_filename,
                save_relative_paths=self.options.save_relative_paths,
            )
        for prefix in doomed:
            try:
                delete_checkpoint(prefix, directory, meta_graph_suffix)
            except Exception as err:
                logger.warning("Ignoring: %s", err)
        if found or doomed:
            logger.info("recovered an interrupted save in %s: adopted %s, deleted %s", directory,
                        [p for p, _ in found], doomed)
        _remove_journal_quietly(directory, latest_filename)

    # ------------------------------------------------------------------ restore

    def restore(self, save_path: PathLike, target: PyTree | None = None, *, progress: Any = None) -> PyTree:
        """Restores a checkpoint; returns a pytree shaped like ``target`` or the template.

        Leaves the saver does not cover (a subset saver) keep the target's values. Without a
        template or target, returns every tensor as a nested dict of numpy arrays.
        ``progress`` is as :meth:`save` takes it (bytes read and checked).

        Raises:
            NotACheckpointError: (a ``ValueError`` and a ``NotFoundError``) ``save_path`` names no
                checkpoint; a directory is accepted and means its latest checkpoint.
            InvalidArgumentError: ``save_path`` is None.
            NotFoundError: keys are missing (all of them are listed).
            InvalidArgumentError: shapes (without ``reshape``) or dtypes differ (all listed).
        """
        if self._is_empty:
            return target if target is not None else self._template
        if save_path is None:
            raise InvalidArgumentError("Can't load save_path when it is None.")
        logger.info("Restoring parameters from %s", save_path)
        if not self._is_built:
            if target is None:
                return restore_as_numpy(save_path)
            self.build(target)
        tree = target if target is not None else self._template
        saveables = self._saveables
        shardings = None
        if target is not None:
            # The target's own shapes, dtypes and kinds are what restore checks and returns.
            target_leaves = flatten_values(target, saveables)
            saveables = tuple(s.for_leaf(leaf) for s, leaf in zip(saveables, target_leaves))
            shardings = [_target_sharding(s, leaf) for s, leaf in zip(saveables, target_leaves)]
        try:
            leaves = _pipeline.restore(
                self._builder, saveables, save_path, reshape=self.options.reshape,
                restore_sequentially=self.options.restore_sequentially, shardings=shardings, progress=progress,
            )
        except NotFoundError as err:  # the seed's fallback: an object-based (TF2) checkpoint?
            if isinstance(err, CheckpointNotFoundError):
                raise
            from jaxsaver.interop._object_graph import object_based_saveables

            saveables = object_based_saveables(saveables, save_path, err)
            leaves = _pipeline.restore(
                self._builder, saveables, save_path, reshape=self.options.reshape,
                restore_sequentially=self.options.restore_sequentially, shardings=shardings, progress=progress,
            )
        if tree is None:
            return {s.key: leaf for s, leaf in zip(saveables, leaves)}
        return unflatten_like(tree, saveables, {s.key: leaf for s, leaf in zip(saveables, leaves)})

    # ------------------------------------------------------------------ display

    def __repr__(self) -> str:
        from jaxsaver.inspect import saver_text

        return saver_text(self)

    def _repr_html_(self) -> str:
        from jaxsaver.inspect import saver_html

        return saver_html(self)

    # ------------------------------------------------------------------ meta graph

    def set_meta_graph(self, *, functions: Any = None, collection_list: Any = None, meta_info_def: Any = None) -> None:
        """What the ``.meta`` of every later save carries besides the saver (see :func:`export_meta_graph`).

        ``functions`` are exported now (``(jitted_fn, example_args)`` pairs go through
        ``jax.export`` once), so each save only writes their bytes.
        """
        from jaxsaver._meta_export import as_exported_function

        self._meta_graph = {
            "functions": {name: as_exported_function(name, fn) for name, fn in (functions or {}).items()},
            "collection_list": dict(collection_list or {}),
            "meta_info_def": meta_info_def,
        }

    def export_meta_graph(
        self,
        filename: PathLike | None = None,
        collection_list: Any = None,
        as_text: bool = False,
        export_scope: str | None = None,
        clear_devices: bool = False,
        *,
        functions: Any = None,
        meta_info_def: Any = None,
    ) -> meta_graph_pb2.MetaGraphDef:
        """A ``MetaGraphDef`` of this saver (and the functions, collections and info given here or
        to :meth:`set_meta_graph`); written if ``filename``. See :func:`jaxsaver.export_meta_graph`."""
        from jaxsaver._meta_export import export_meta_graph

        parts = dict(self._meta_graph)
        for key, value in (("functions", functions), ("collection_list", collection_list),
                           ("meta_info_def", meta_info_def)):
            if value is not None:
                parts[key] = value
        return export_meta_graph(
            filename, saver=self, as_text=as_text, export_scope=export_scope, clear_devices=clear_devices, **parts
        )

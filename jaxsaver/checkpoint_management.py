"""The ``checkpoint`` state file and checkpoint-prefix file helpers, as in TF's checkpoint_management.

Functions keep TensorFlow's names, arguments, path rules, error wording and log messages, and
write byte-identical state files. Path strings are handled the way TF handles them (``os.path``
on the user's string, so ``memory://dir`` is a *relative* directory exactly as ``gs://dir`` is
in TF); every file access goes through :mod:`jaxsaver._store`, so local paths and
``memory://`` URLs both work. Each function also takes a keyword-only ``storage`` (a
:class:`~jaxsaver._store.Store` or a tensorstore kvstore spec), a jaxsaver extension passed on
to :func:`~jaxsaver._store.resolve`.

Example:
    >>> update_checkpoint_state("memory://doc_cm", "memory://doc_cm/model-1")
    >>> get_checkpoint_state("memory://doc_cm").model_checkpoint_path
    'memory://doc_cm/model-1'
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import text_format

from jaxsaver._proto import saver_pb2
from jaxsaver._errors import (
    CheckpointNotFoundError,
    DataLossError,
    FailedPreconditionError,
    InvalidArgumentError,
    StorageError,
)
from jaxsaver._store import Store, resolve
from jaxsaver._proto.checkpoint_state_pb2 import CheckpointState

__all__ = [
    "generate_checkpoint_state_proto",
    "update_checkpoint_state",
    "update_checkpoint_state_internal",
    "get_checkpoint_state",
    "latest_checkpoint",
    "checkpoint_exists",
    "get_checkpoint_mtimes",
    "remove_checkpoint",
    "meta_graph_filename",
]

logger = logging.getLogger(__name__)

_DEFAULT_STATE_FILENAME = "checkpoint"
_GLOB_MAGIC = re.compile(r"[*?\[]")
_SHARD_SUFFIX = re.compile(r"-[\d\?]+-of-\d+$")


def _state_filename(save_dir: str, latest_filename: str | None) -> str:
    return os.path.join(save_dir, latest_filename or _DEFAULT_STATE_FILENAME)


def _matching_files(pattern: str, storage: Any) -> list[str]:
    """Keys matching ``pattern`` (TF's ``get_matching_files``; wildcards in the basename only)."""
    store, key = resolve(pattern, storage)
    if not _GLOB_MAGIC.search(store.basename(key)):
        return [key] if store.exists(key) else []
    directory, base = store.dirname(key), store.basename(key)
    literal = base[: _GLOB_MAGIC.search(base).start()]
    # fnmatch's '*' and '?' would cross '/', glob's do not: translate by hand.
    regex = re.compile(
        "".join(
            "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
            for c in base
        )
    )
    out = []
    for found in store.list(store.join(directory, literal) if directory else literal):
        if store.dirname(found) == directory and regex.fullmatch(store.basename(found)):
            out.append(found)
    return out


def generate_checkpoint_state_proto(
    save_dir: str | os.PathLike,
    model_checkpoint_path: str,
    all_model_checkpoint_paths: Sequence[str] | None = None,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
) -> CheckpointState:
    """Builds a ``CheckpointState`` proto (TF's ``generate_checkpoint_state_proto``).

    ``model_checkpoint_path`` is appended to ``all_model_checkpoint_paths`` unless it is already
    last (logged at INFO, as TF). When ``save_dir`` is relative, every relative path is rewritten
    relative to it (``rel/model-2`` under ``rel`` becomes ``model-2``); absolute ones are kept.
    Unlike TF, the caller's list is not modified.

    Raises:
        InvalidArgumentError: (a ``ValueError``) timestamps were given but their count differs from the paths'.

    Example:
        >>> generate_checkpoint_state_proto("rel", "rel/model-2").model_checkpoint_path
        'model-2'
    """
    save_dir = os.fspath(save_dir)
    paths = list(all_model_checkpoint_paths or [])
    if not paths or paths[-1] != model_checkpoint_path:
        logger.info(
            "%s is not in all_model_checkpoint_paths. Manually adding it.", model_checkpoint_path
        )
        paths.append(model_checkpoint_path)
    if all_model_checkpoint_timestamps and len(all_model_checkpoint_timestamps) != len(paths):
        raise InvalidArgumentError(
            "Checkpoint timestamps, if provided, must match checkpoint paths (got "
            f"paths {paths} and timestamps {all_model_checkpoint_timestamps})"
        )
    if not os.path.isabs(save_dir):
        if not os.path.isabs(model_checkpoint_path):
            model_checkpoint_path = os.path.relpath(model_checkpoint_path, save_dir)
        paths = [p if os.path.isabs(p) else os.path.relpath(p, save_dir) for p in paths]
    return CheckpointState(
        model_checkpoint_path=model_checkpoint_path,
        all_model_checkpoint_paths=paths,
        all_model_checkpoint_timestamps=all_model_checkpoint_timestamps,
        last_preserved_timestamp=last_preserved_timestamp,
    )


def update_checkpoint_state(
    save_dir: str | os.PathLike,
    model_checkpoint_path: str,
    all_model_checkpoint_paths: Sequence[str] | None = None,
    latest_filename: str | None = None,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
    *,
    storage: Any = None,
) -> None:
    """Writes the ``checkpoint`` state file in ``save_dir`` (TF's ``update_checkpoint_state``).

    Same as :func:`update_checkpoint_state_internal` with ``save_relative_paths=False``.
    """
    update_checkpoint_state_internal(
        save_dir=save_dir,
        model_checkpoint_path=model_checkpoint_path,
        all_model_checkpoint_paths=all_model_checkpoint_paths,
        latest_filename=latest_filename,
        save_relative_paths=False,
        all_model_checkpoint_timestamps=all_model_checkpoint_timestamps,
        last_preserved_timestamp=last_preserved_timestamp,
        storage=storage,
    )


def update_checkpoint_state_internal(
    save_dir: str | os.PathLike,
    model_checkpoint_path: str,
    all_model_checkpoint_paths: Sequence[str] | None = None,
    latest_filename: str | None = None,
    save_relative_paths: bool = False,
    all_model_checkpoint_timestamps: Sequence[float] | None = None,
    last_preserved_timestamp: float | None = None,
    *,
    storage: Any = None,
) -> None:
    """Atomically writes the text-format ``CheckpointState`` file, byte-identical to TF's.

    Args:
        save_dir: the directory holding the checkpoints and the state file.
        model_checkpoint_path: the newest checkpoint prefix.
        all_model_checkpoint_paths: the listed prefixes, oldest first.
        latest_filename: the state file's name; ``"checkpoint"`` if None.
        save_relative_paths: write absolute prefixes relative to ``save_dir``.
        all_model_checkpoint_timestamps: one epoch time per listed prefix (optional).
        last_preserved_timestamp: time of the last checkpoint kept by the hours rule (optional).
        storage: optional store override for :func:`~jaxsaver._store.resolve`.

    Raises:
        FailedPreconditionError: (a ``RuntimeError``) the state file's path equals the checkpoint path written into it.
        InvalidArgumentError: (a ``ValueError``) timestamps and paths differ in count.

    Unlike TF, ``all_model_checkpoint_paths=None`` with ``save_relative_paths=True`` means an
    empty list (TF raises ``TypeError``).
    """
    save_dir = os.fspath(save_dir)
    state_file = _state_filename(save_dir, latest_filename)
    paths = list(all_model_checkpoint_paths or [])
    if save_relative_paths:

        def relative(p: str) -> str:
            return os.path.relpath(p, save_dir) if os.path.isabs(p) else p

        model_path, paths = relative(model_checkpoint_path), [relative(p) for p in paths]
    else:
        model_path = model_checkpoint_path
    ckpt = generate_checkpoint_state_proto(
        save_dir,
        model_path,
        all_model_checkpoint_paths=paths,
        all_model_checkpoint_timestamps=all_model_checkpoint_timestamps,
        last_preserved_timestamp=last_preserved_timestamp,
    )
    if state_file == ckpt.model_checkpoint_path:
        raise FailedPreconditionError(
            f"Save path '{model_checkpoint_path}' conflicts with path used for "
            "checkpoint state.  Please use a different save path."
        )
    store, key = resolve(state_file, storage)
    store.write(key, text_format.MessageToString(ckpt).encode("utf-8"))


def get_checkpoint_state(
    checkpoint_dir: str | os.PathLike,
    latest_filename: str | None = None,
    *,
    storage: Any = None,
) -> CheckpointState | None:
    """Reads the state file in ``checkpoint_dir`` (TF's ``get_checkpoint_state``).

    Relative paths in the file are joined onto ``checkpoint_dir``.

    Returns:
        The ``CheckpointState``, or None if the file is missing, unreadable or does not parse
        (the last two are logged as warnings).

    Raises:
        InvalidArgumentError: (a ``ValueError``) the file parses but has no ``model_checkpoint_path``.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    state_file = _state_filename(checkpoint_dir, latest_filename)
    try:
        store, key = resolve(state_file, storage)
        if not store.exists(key):
            return None
        content = store.read(key).decode("utf-8")
        ckpt = text_format.Merge(content, CheckpointState())
    except (StorageError, CheckpointNotFoundError, DataLossError, text_format.ParseError,
            UnicodeDecodeError) as e:
        logger.warning("%s: %s", type(e).__name__, e)
        logger.warning("%s: Checkpoint ignored", state_file)
        return None
    if not ckpt.model_checkpoint_path:
        raise InvalidArgumentError("Invalid checkpoint state loaded from " + checkpoint_dir)
    if not os.path.isabs(ckpt.model_checkpoint_path):
        ckpt.model_checkpoint_path = os.path.join(checkpoint_dir, ckpt.model_checkpoint_path)
    for i, p in enumerate(ckpt.all_model_checkpoint_paths):
        if not os.path.isabs(p):
            ckpt.all_model_checkpoint_paths[i] = os.path.join(checkpoint_dir, p)
    return ckpt


def latest_checkpoint(
    checkpoint_dir: str | os.PathLike,
    latest_filename: str | None = None,
    *,
    storage: Any = None,
) -> str | None:
    """The newest checkpoint prefix in ``checkpoint_dir``, or None (TF's ``latest_checkpoint``).

    The prefix is returned only if ``prefix.index`` (V2) or ``prefix`` itself (V1) exists;
    otherwise an error "Couldn't match files for checkpoint ..." is logged.
    """
    ckpt = get_checkpoint_state(checkpoint_dir, latest_filename, storage=storage)
    if ckpt and ckpt.model_checkpoint_path:
        if checkpoint_exists(ckpt.model_checkpoint_path, storage=storage):
            return ckpt.model_checkpoint_path
        logger.error("Couldn't match files for checkpoint %s", ckpt.model_checkpoint_path)
    return None


def checkpoint_exists(checkpoint_prefix: str | os.PathLike, *, storage: Any = None) -> bool:
    """Whether a V2 (``prefix.index``) or V1 (``prefix``) checkpoint exists."""
    checkpoint_prefix = os.fspath(checkpoint_prefix)
    return bool(
        _matching_files(checkpoint_prefix + ".index", storage)
        or _matching_files(checkpoint_prefix, storage)
    )


def get_checkpoint_mtimes(
    checkpoint_prefixes: Iterable[str | os.PathLike], *, storage: Any = None
) -> list[float]:
    """Modification times of the checkpoints that exist, in order (TF's ``get_checkpoint_mtimes``).

    The V2 ``.index`` file is tried first, then the V1 file. Missing checkpoints are skipped,
    so the result can be shorter than the input. Times are whole seconds, as TF's local
    filesystem reports them.
    """
    mtimes = []
    for prefix in checkpoint_prefixes:
        prefix = os.fspath(prefix)
        for pattern in (prefix + ".index", prefix):
            found = _matching_files(pattern, storage)
            if found:
                store, _ = resolve(pattern, storage)
                try:
                    mtimes.append(float(math.floor(store.mtime(found[0]))))
                except CheckpointNotFoundError:  # deleted concurrently
                    pass
                break
    return mtimes


def remove_checkpoint(
    checkpoint_prefix: str | os.PathLike,
    checkpoint_format_version: int = saver_pb2.SaverDef.V2,
    meta_graph_suffix: str = "meta",
    *,
    storage: Any = None,
) -> None:
    """Deletes a checkpoint's files (TF's ``remove_checkpoint``); missing files are ignored.

    V2: ``prefix.meta``, ``prefix.index`` and every ``prefix.data-?????-of-?????``.
    V1: ``prefix.meta`` and ``prefix``.
    """
    checkpoint_prefix = os.fspath(checkpoint_prefix)
    patterns = [meta_graph_filename(checkpoint_prefix, meta_graph_suffix)]
    if checkpoint_format_version == saver_pb2.SaverDef.V2:
        patterns += [checkpoint_prefix + ".index", checkpoint_prefix + ".data-?????-of-?????"]
    else:
        patterns.append(checkpoint_prefix)
    for pattern in patterns:
        store, _ = resolve(pattern, storage)
        for key in _matching_files(pattern, storage):
            _delete(store, key)


def _delete(store: Store, key: str) -> None:
    try:
        store.delete(key)
    except CheckpointNotFoundError:
        logger.warning(
            "Hit NotFoundError when deleting '%s', possibly because another "
            "process/thread is also deleting/moving the same file",
            store.url(key),
        )


def meta_graph_filename(checkpoint_filename: str, meta_graph_suffix: str = "meta") -> str:
    """The MetaGraphDef file of a checkpoint: a shard suffix ``-?????-of-NNNNN`` is dropped.

    Example:
        >>> meta_graph_filename("model.ckpt-123-?????-of-00005")
        'model.ckpt-123.meta'
    """
    return ".".join([_SHARD_SUFFIX.sub("", os.fspath(checkpoint_filename)), meta_graph_suffix])

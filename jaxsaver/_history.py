"""A managed checkpoint directory read as values: its state file, checkpoints and sidecars (no JAX).

Each checkpoint written by :class:`jaxsaver.CheckpointManager` has a small JSON sidecar,
``<prefix>.metadata.json``, written before the checkpoint's ``.index`` is committed: its step,
time, metrics, metadata, score (``best_fn(metrics)``) and the manager's retention settings.
TensorFlow ignores it. :func:`scan` sorts a directory's contents into the checkpoints the state
file tracks, those it does not (untracked), state-file entries that are gone or outside the
directory, and the leftovers of saves that never committed. ``jaxsaver ls`` and the manager
both read a directory through it.

Example:
    >>> data = encode_sidecar(step=5, time=10.0, metrics={"loss": 0.25}, metadata={"lr": 0.1},
    ...                       score=0.25, policy=ManagerPolicy(max_to_keep=2))
    >>> decode_sidecar(data, "model-5.metadata.json").metrics
    {'loss': 0.25}
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jaxsaver._errors import DataLossError, InvalidArgumentError
from jaxsaver._retention import CheckpointInfo, ManagerPolicy
from jaxsaver._store import Store, canonical_key, resolve
from jaxsaver.checkpoint_management import get_checkpoint_state

__all__ = [
    "SIDECAR_SUFFIX",
    "MAX_SIDECAR_BYTES",
    "Sidecar",
    "encode_sidecar",
    "decode_sidecar",
    "sidecar_path",
    "read_sidecar",
    "Tracked",
    "DirectoryView",
    "scan",
    "step_of",
    "annotate_listing",
]

logger = logging.getLogger(__name__)

#: The sidecar of checkpoint ``prefix`` is ``prefix + "." + SIDECAR_SUFFIX``.
SIDECAR_SUFFIX = "metadata.json"
#: Sidecars larger than this are refused, on write and on read (a hostile file stays bounded).
MAX_SIDECAR_BYTES = 16 << 20
_FORMAT = "jaxsaver.manager/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Sidecar:
    """The decoded ``<prefix>.metadata.json`` of one checkpoint."""

    step: int
    """The checkpoint's step."""
    time: float
    """When the save was asked for, seconds since the epoch."""
    metrics: dict[str, float | int | None]
    """The metrics given to ``save`` (numbers; NaN allowed)."""
    metadata: Any
    """The metadata given to ``save`` (JSON values; tuples come back as lists)."""
    score: float | None
    """``best_fn(metrics)`` when the save was made; None without metrics or ``best_fn``."""
    policy: ManagerPolicy | None
    """The retention settings of the manager that wrote it."""


def sidecar_path(prefix: str) -> str:
    """The sidecar of a checkpoint prefix.

    Example:
        >>> sidecar_path("ckpt/model-7")
        'ckpt/model-7.metadata.json'
    """
    return f"{prefix}.{SIDECAR_SUFFIX}"


def _check_json(value: Any, where: str) -> None:
    """Raises unless ``value`` is made of JSON values (str keys; tuples allowed, read back as lists)."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if item is None or isinstance(item, (bool, int, float, str)):
            continue
        if isinstance(item, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, Mapping):
            for key, v in item.items():
                if not isinstance(key, str):
                    raise InvalidArgumentError(
                        f"{path} has the key {key!r} of type {type(key).__name__}: JSON keys are strings"
                    )
                stack.append((v, f"{path}[{key!r}]"))
        else:
            raise InvalidArgumentError(
                f"{path} is a {type(item).__name__}, not a JSON value (None, bool, int, float, str, list, dict)"
            )


def encode_sidecar(
    *,
    step: int,
    time: float,
    metrics: Mapping[str, float | int | None] | None,
    metadata: Any,
    score: float | None,
    policy: ManagerPolicy | None,
) -> bytes:
    """The sidecar's bytes.

    Raises:
        InvalidArgumentError: a metric is not a number, the metadata is not JSON, or the
            encoding exceeds :data:`MAX_SIDECAR_BYTES`.
    """
    metrics = dict(metrics or {})
    for name, value in metrics.items():
        if not isinstance(name, str):
            raise InvalidArgumentError(f"metric names must be strings, got {name!r}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidArgumentError(f"metric {name!r} must be a number, got {type(value).__name__}: {value!r}")
    _check_json(metadata, "metadata")
    document = {
        "format": _FORMAT,
        "step": int(step),
        "time": float(time),
        "metrics": metrics,
        "metadata": metadata,
        "score": None if score is None else float(score),
        "policy": None if policy is None else policy.as_dict(),
    }
    data = json.dumps(document, indent=1, sort_keys=False).encode("utf-8")
    if len(data) > MAX_SIDECAR_BYTES:
        raise InvalidArgumentError(
            f"metrics and metadata of step {step} take {len(data)} bytes as JSON; the limit is {MAX_SIDECAR_BYTES}"
        )
    return data


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def decode_sidecar(data: bytes, where: str) -> Sidecar:
    """Parses and checks a sidecar's bytes.

    Raises:
        DataLossError: the bytes are not a sidecar (naming ``where`` and what is wrong).
    """
    if len(data) > MAX_SIDECAR_BYTES:
        raise DataLossError(f"{where}: {len(data)} bytes, more than a sidecar may hold ({MAX_SIDECAR_BYTES})")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise DataLossError(f"{where}: not a JSON sidecar ({type(err).__name__}: {err})") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise DataLossError(f"{where}: not a jaxsaver manager sidecar (format must be {_FORMAT!r})")
    step, time, metrics, score = doc.get("step"), doc.get("time"), doc.get("metrics"), doc.get("score")
    problems = []
    if isinstance(step, bool) or not isinstance(step, int):
        problems.append(f"step {step!r} is not an integer")
    if not _number(time) or time is None:
        problems.append(f"time {time!r} is not a number")
    if not isinstance(metrics, dict) or not all(_number(v) for v in metrics.values()):
        problems.append("metrics is not an object of numbers")
    if not _number(score):
        problems.append(f"score {score!r} is not a number")
    policy = doc.get("policy")
    if policy is not None:
        try:
            policy = ManagerPolicy.from_dict(policy)
        except (InvalidArgumentError, TypeError) as err:
            problems.append(f"policy: {err}")
    if problems:
        raise DataLossError(f"{where}: " + "; ".join(problems))
    return Sidecar(step=step, time=float(time), metrics=metrics, metadata=doc.get("metadata"),
                   score=None if score is None else float(score), policy=policy)


def read_sidecar(prefix: str, storage: Any = None) -> Sidecar | None:
    """The sidecar of checkpoint ``prefix``, or None when it has none.

    Raises:
        DataLossError: the sidecar is larger than :data:`MAX_SIDECAR_BYTES` or malformed.
    """
    store, key = resolve(sidecar_path(prefix), storage)
    if not store.exists(key):
        return None
    size = store.size(key)
    if size > MAX_SIDECAR_BYTES:
        raise DataLossError(f"{store.url(key)}: {size} bytes, more than a sidecar may hold ({MAX_SIDECAR_BYTES})")
    return decode_sidecar(store.read(key), store.url(key))


def step_of(basename: str, checkpoint_name: str) -> int | None:
    """The step in a checkpoint's name (``model-12`` → 12; ``model-00000012`` too), else None.

    Example:
        >>> step_of("model-00000012", "model"), step_of("model", "model"), step_of("other-3", "model")
        (12, None, None)
    """
    match = re.fullmatch(re.escape(checkpoint_name) + r"-(\d+)", basename)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracked:
    """A checkpoint the state file lists, that exists, named ``<checkpoint_name>-<step>``."""

    prefix: str
    """The prefix as the state file spells it (joined onto the directory)."""
    step: int
    """Its step."""
    time: float
    """The state file's timestamp, else the sidecar's, else the ``.index`` mtime."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryView:
    """What :func:`scan` found in a directory, every list sorted by step or name."""

    directory: str
    """The directory as given."""
    tracked: tuple[Tracked, ...]
    """State-file entries that exist in the directory and are named ``<name>-<step>``."""
    missing: tuple[str, ...]
    """State-file entries whose ``.index`` is gone."""
    foreign: tuple[str, ...]
    """State-file entries outside the directory or not named ``<name>-<step>`` (never managed)."""
    untracked: tuple[str, ...]
    """Checkpoints (an ``.index``) in the directory that the state file does not list."""
    leftovers: tuple[str, ...]
    """Files ``<name>-<step>.*`` whose checkpoint has no ``.index``: saves that never committed."""


def _files_in(store: Store, directory_key: str) -> list[str]:
    """The keys of the files directly in a directory."""
    listed = store.list(directory_key.rstrip("/") + "/" if directory_key else "")
    return [key for key in listed if canonical_key(store, store.dirname(key)) == canonical_key(store, directory_key)]


def scan(directory: str, checkpoint_name: str, *, storage: Any = None) -> DirectoryView:
    """Reads a directory's state file and lists its files (nothing is written or deleted).

    Raises:
        InvalidArgumentError: (from the state file) it parses but names no checkpoint.
    """
    directory = os.fspath(directory)
    store, dir_key = resolve(directory, storage)
    state = get_checkpoint_state(directory, storage=storage)
    listed = list(state.all_model_checkpoint_paths) if state is not None else []
    if state is not None and state.model_checkpoint_path not in listed:
        listed.append(state.model_checkpoint_path)
    stamp_of: dict[str, float] = {}
    if state is not None and len(state.all_model_checkpoint_timestamps) == len(state.all_model_checkpoint_paths):
        stamp_of = dict(zip(state.all_model_checkpoint_paths, state.all_model_checkpoint_timestamps))
    files = _files_in(store, dir_key)
    names = {store.basename(key) for key in files}
    here = canonical_key(store, dir_key)

    tracked, missing, foreign, seen = [], [], [], set()
    for prefix in listed:
        p_store, p_key = resolve(prefix, storage)
        base = p_store.basename(p_key)
        step = step_of(base, checkpoint_name)
        if p_store is not store or canonical_key(store, p_store.dirname(p_key)) != here or step is None:
            foreign.append(prefix)
            continue
        if base + ".index" not in names:
            missing.append(prefix)
            continue
        seen.add(base)
        when = stamp_of.get(prefix)
        if when is None:
            try:
                sidecar = read_sidecar(prefix, storage)
            except DataLossError:
                sidecar = None
            when = sidecar.time if sidecar is not None else store.mtime(p_key + ".index")
        tracked.append(Tracked(prefix=prefix, step=step, time=float(when)))

    untracked, leftovers = [], []
    pattern = re.compile(re.escape(checkpoint_name) + r"-(\d+)\.(.+)")
    for name in sorted(names):
        if name.endswith(".index") and name[: -len(".index")] not in seen:
            untracked.append(os.path.join(directory, name[: -len(".index")]))
        match = pattern.fullmatch(name)
        if match and not name.endswith(".index") and f"{checkpoint_name}-{match.group(1)}.index" not in names:
            leftovers.append(os.path.join(directory, name))

    def by_step(path: str) -> tuple[int, str]:
        step = step_of(os.path.basename(path), checkpoint_name)
        return (-1 if step is None else step, path)

    return DirectoryView(
        directory=directory,
        tracked=tuple(sorted(tracked, key=lambda t: t.step)),
        missing=tuple(missing),
        foreign=tuple(foreign),
        untracked=tuple(sorted(untracked, key=by_step)),
        leftovers=tuple(sorted(leftovers, key=by_step)),
    )



def annotate_listing(directory: str, prefixes: Sequence[str]) -> tuple[dict[str, dict[str, Any]], DirectoryView]:
    """For ``jaxsaver ls``: each listed prefix's metrics and the retention rules keeping it.

    The checkpoint name is read off the newest listed prefix (``model-12`` → ``model``); the
    rules are those stored in the newest sidecar that has them. ``kept_by`` is None where no
    manager wrote the directory; ``metrics`` is None where a checkpoint has no sidecar, and a
    corrupt sidecar is reported under ``sidecar_error``.

    Returns:
        ``{prefix: {"metrics", "kept_by"[, "sidecar_error"]}}`` and the directory's :func:`scan`.
    """
    names = [re.fullmatch(r"(.+)-\d+", os.path.basename(p)) for p in prefixes]
    name = next((m.group(1) for m in reversed(names) if m), "model")
    view = scan(directory, name)
    out: dict[str, dict[str, Any]] = {p: {"metrics": None, "kept_by": None} for p in prefixes}
    sidecars: dict[int, Sidecar] = {}
    for entry in view.tracked:
        try:
            sidecar = read_sidecar(entry.prefix)
        except DataLossError as err:
            out.setdefault(entry.prefix, {"metrics": None, "kept_by": None})["sidecar_error"] = str(err)
            continue
        if sidecar is not None:
            sidecars[entry.step] = sidecar
            out.setdefault(entry.prefix, {"metrics": None, "kept_by": None})["metrics"] = sidecar.metrics
    policy = next((sidecars[s].policy for s in sorted(sidecars, reverse=True) if sidecars[s].policy), None)
    if policy is not None:
        infos = [CheckpointInfo(step=t.step, time=t.time, score=sidecars[t.step].score if t.step in sidecars else None)
                 for t in view.tracked]
        reasons = policy.reasons(infos)
        for entry in view.tracked:
            out.setdefault(entry.prefix, {"metrics": None, "kept_by": None})["kept_by"] = list(reasons[entry.step])
    return out, view

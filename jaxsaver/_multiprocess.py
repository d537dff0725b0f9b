"""The multi-process save: each process writes what it owns, process 0 merges and commits.

Who writes what:

- a **global** ``jax.Array`` (one spanning several processes' devices): each replica-0 shard by
  the process holding it, so every byte is written by exactly one process;
- a **replicated** value, the same on every process: host values (numpy arrays, Python scalars)
  and **process-local** ``jax.Array`` s (all of their devices belong to the calling process, e.g.
  ``jnp.zeros(())`` made outside ``jit``): written once, by process 0, under the leaf's name.
  Every process publishes a digest of each such value and the save fails before writing
  anything, naming the leaves and processes, when a process's value differs from process 0's
  (one of them would otherwise be lost without a word). Per-process state that really differs
  belongs in a global array (one row per process) or under per-process names.

Steps (each one bounded and named, see :mod:`jaxsaver.distributed`)::

    snapshot ─▶ "parts": part counts and digests; process 0 checks the digests and numbers
             every part globally (cap-split parts included) ─▶ write own parts
             ─▶ "written" ─▶ process 0 merges every part index, commits the ``.index``, removes
             stale parts of earlier failed saves, writes the state file, applies retention
             ─▶ "committed" ─▶ every process returns the same prefix.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxsaver import _stale
from jaxsaver._bundle.merge import commit_merged, read_part_index
from jaxsaver._errors import InvalidArgumentError
from jaxsaver._pipeline import Location, SavePlan, part_names, plan_save, write_part
from jaxsaver._snapshot import Snapshot
from jaxsaver.distributed import Coordination, CoordinationError, offsets
from jaxsaver.saveables import Saveable

if TYPE_CHECKING:
    from jaxsaver.builder import SaverBuilder

__all__ = ["replicated_indices", "digest", "snapshot", "number_parts", "first_part", "write_distributed"]

logger = logging.getLogger(__name__)

_MAX_THREADS = 8
_READ_THREADS = 16


def replicated_indices(values: Sequence[Any]) -> list[int]:
    """Positions of the values every process holds whole: host values and process-local arrays."""
    return [i for i, v in enumerate(values) if not isinstance(v, jax.Array) or v.is_fully_addressable]


def digest(value: Any) -> str:
    """A short digest of a value's dtype, shape and bytes (strings element by element).

    Example:
        >>> import numpy as np
        >>> digest(np.arange(3)) == digest(np.arange(3)), digest(np.arange(3)) == digest(np.arange(4))
        (True, False)
    """
    array = np.asarray(value)
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    if array.dtype.kind == "O":
        for item in array.reshape(-1):
            raw = item if isinstance(item, bytes) else str(item).encode("utf-8", "surrogateescape")
            h.update(len(raw).to_bytes(8, "little"))
            h.update(raw)
    else:
        h.update(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    return h.hexdigest()


def snapshot(
    builder: SaverBuilder,
    saveables: Sequence[Saveable],
    values: Sequence[Any],
    location: Location,
    *,
    leader: bool,
    mode: str | None,
) -> tuple[SavePlan, Snapshot, dict[str, str]]:
    """This process's share of a multi-process save, held (see ``_pipeline.snapshot``).

    Returns:
        ``(plan, snapshot, digests)``: the plan of the parts this process writes (replicated
        values only on process 0), the held bytes, and ``{name: digest}`` of the replicated
        values (checked against process 0's at the first step).
    """
    checked = builder.snapshot(saveables, values, copy=True if mode == "device" else None)
    plan = plan_save(saveables, checked, location, sharded=True, sharded_filename=builder.sharded_filename)
    replicated = replicated_indices(checked)
    digests = {saveables[i].name: digest(checked[i]) for i in replicated}
    if not leader:
        drop = set(replicated)
        groups = tuple(
            (device, kept) for device, group in plan.groups
            if (kept := tuple(w for w in group if w.value_index not in drop))
        )
        plan = dataclasses.replace(plan, groups=groups, writes=tuple(w for _, g in groups for w in g))
    return plan, Snapshot(checked, plan.writes, mode=mode, owns_device_arrays=mode == "device"), digests


def number_parts(values: Sequence[str]) -> str:
    """Process 0's reduction of the first step: checks the replicated digests, numbers the parts.

    ``values[p]`` is process p's JSON ``{"parts": count, "digests": {name: digest}}``. Returns
    JSON ``{"each": count}`` when every process has as many parts (the usual case: a few bytes
    for any process count), else ``{"offsets": [first part of each process], "total": parts}``.

    Raises:
        InvalidArgumentError: a replicated value differs from process 0's (leaves and
            processes named).

    Example:
        >>> one = '{"parts": 2, "digests": {"step": "aa"}}'
        >>> number_parts([one, '{"parts": 1, "digests": {"step": "aa"}}'])
        '{"offsets": [0, 2], "total": 3}'
        >>> number_parts([one, one])
        '{"each": 2}'
    """
    parsed = [json.loads(v) for v in values]
    reference = parsed[0]["digests"]
    problems = []
    for pid, item in enumerate(parsed[1:], start=1):
        theirs = item["digests"]
        differ = sorted(n for n in set(reference) | set(theirs) if reference.get(n) != theirs.get(n))
        if differ:
            problems.append((pid, differ))
    if problems:
        lines = [
            f"process {pid}: " + ", ".join(
                repr(n) + ("" if n in reference else " (not replicated on process 0)")
                + ("" if n in parsed[pid]["digests"] else f" (not replicated on process {pid})")
                for n in names[:16]
            ) + (f" and {len(names) - 16} more" if len(names) > 16 else "")
            for pid, names in problems[:16]
        ]
        raise InvalidArgumentError(
            "values every process holds whole (host values, process-local jax.Arrays) are written once, "
            "by process 0, so they must be equal on every process; these differ from process 0's:\n  "
            + "\n  ".join(lines)
            + "\nMake per-process state a global array, or give it per-process names."
        )
    counts = [int(item["parts"]) for item in parsed]
    if len(set(counts)) == 1:
        return json.dumps({"each": counts[0]})
    return json.dumps({"offsets": offsets(counts), "total": sum(counts)})


def first_part(numbering: dict[str, Any], process_id: int, num_processes: int) -> tuple[int, int]:
    """``(this process's first part number, total parts)`` from :func:`number_parts`' result.

    Example:
        >>> first_part({"each": 2}, 3, 4), first_part({"offsets": [0, 2], "total": 3}, 1, 2)
        ((6, 8), (2, 3))
    """
    if "each" in numbering:
        each = int(numbering["each"])
        return process_id * each, num_processes * each
    return int(numbering["offsets"][process_id]), int(numbering["total"])


def _write_own(builder: SaverBuilder, plan: SavePlan, source: Snapshot, *, write_index: bool) -> list[Any]:
    count = len(plan.groups)
    if count <= 1:
        return [write_part(builder, plan, k, source, write_index=write_index) for k in range(count)]
    with concurrent.futures.ThreadPoolExecutor(min(_MAX_THREADS, count)) as pool:
        futures = [pool.submit(write_part, builder, plan, k, source, write_index=write_index) for k in range(count)]
        return [future.result() for future in futures]


def _read_parts(store: Any, prefixes: Sequence[str], data_keys: Sequence[str | None], own: Sequence[Any],
                mine: range) -> list[Any]:
    """Every part's index in part order: process 0's own from memory, the others' read from the
    store concurrently (object stores are latency-bound: one GET per part)."""
    others = [k for k in range(len(prefixes)) if k not in mine]
    with concurrent.futures.ThreadPoolExecutor(max(1, min(_READ_THREADS, len(others)))) as pool:
        read = dict(zip(others, pool.map(lambda k: read_part_index(store, prefixes[k], data_key=data_keys[k]), others)))
    return [own[k - mine.start] if k in mine else read[k] for k in range(len(prefixes))]


def write_distributed(
    builder: SaverBuilder,
    plan: SavePlan,
    source: Snapshot,
    coordination: Coordination,
    digests: dict[str, str],
    *,
    on_commit: Callable[[], None] | None = None,
) -> str:
    """Everything after the snapshot, on every process; returns the prefix (the same everywhere).

    Process 0 reads the other processes' part indexes from the store and merges them with its
    own (held in memory); the merged ``.index`` is the commit point. ``on_commit`` (the state
    file and retention) runs on process 0 after it.

    Raises:
        CoordinationError: a process failed or was late (named); no index was committed.
    """
    location = plan.location
    store = location.store
    leader = coordination.leader
    step = "parts"
    committed = False
    try:
        published = json.dumps({"parts": len(plan.groups), "digests": digests}, sort_keys=True)
        numbering = json.loads(coordination.step("parts", published, combine=number_parts))
        coordination.sweep_earlier()
        first, total = first_part(numbering, coordination.process_id, coordination.num_processes)
        prefixes, data_keys = part_names(location, total, builder.sharded_filename)
        mine = range(first, first + len(plan.groups))
        plan = dataclasses.replace(
            plan, part_prefixes=tuple(prefixes[k] for k in mine), part_data_keys=tuple(data_keys[k] for k in mine)
        )
        step = "written"
        own = _write_own(builder, plan, source, write_index=not leader)
        coordination.step("written", "ok")
        step = "committed"
        if leader:
            coordination.sweep("parts")
            parts = _read_parts(store, prefixes, data_keys, own, mine)
            commit_merged(store, location.key, parts)
            committed = True
            for k in range(total):
                if k not in mine:
                    store.delete(f"{prefixes[k]}.index")
            if plan.temp_dir is not None:
                store.remove_dir(plan.temp_dir)
            _stale.remove_stale(store, location.key, total)
            if on_commit is not None:
                on_commit()
        coordination.step("committed", "ok")
        if leader:
            coordination.sweep("written")
    except CoordinationError:  # every process already knows
        coordination.done()
        raise
    except BaseException as err:
        coordination.fail(step, err, committed=committed)
        coordination.done()
        raise
    coordination.done()
    return location.path

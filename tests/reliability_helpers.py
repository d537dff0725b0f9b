"""What the reliability tests check of a checkpoint directory (shared by the crash and storage tests)."""

from __future__ import annotations

import os

import jaxsaver
from jaxsaver._bundle.reader import BundleReader
from reliability_child import matches


def visible(directory: str) -> list[str]:
    """Every checkpoint prefix in ``directory`` whose index exists."""
    return sorted(os.path.join(directory, n[: -len(".index")]) for n in os.listdir(directory) if n.endswith(".index"))


def intact(prefix: str) -> bool:
    """Whether the checkpoint restores whole and bit-exactly as its seed says."""
    try:
        return matches(jaxsaver.restore_as_numpy(prefix))
    except jaxsaver.JaxsaverError:
        return False


def listed(directory: str) -> list[str]:
    state = jaxsaver.get_checkpoint_state(directory)
    if state is None:
        return []
    return sorted({state.model_checkpoint_path, *state.all_model_checkpoint_paths})


def inspect_dir(directory: str) -> dict[str, int]:
    """Counts after a crash: latest lost, visible checkpoints partial or without .meta."""
    out = {"lost": 0, "partial": 0, "no_meta": 0}
    latest = jaxsaver.latest_checkpoint(directory)
    if latest is None or not intact(latest):
        out["lost"] = 1
    for prefix in visible(directory):
        if not intact(prefix):
            out["partial"] += 1
        if not os.path.exists(prefix + ".meta"):
            out["no_meta"] += 1
    return out


def leftovers(directory: str) -> tuple[list[str], list[str]]:
    """``(orphans, leaked)``: names that belong to no listed checkpoint, and complete
    checkpoints that no state file lists."""
    allowed = {"checkpoint"}
    names = set(os.listdir(directory))
    keep = {os.path.basename(p) for p in listed(directory)}
    for base in keep:
        prefix = os.path.join(directory, base)
        if not os.path.exists(prefix + ".index"):
            continue
        with BundleReader(prefix) as reader:
            count = reader.num_shards
        allowed |= {f"{base}.index", f"{base}.meta"}
        allowed |= {f"{base}.data-{k:05d}-of-{count:05d}" for k in range(count)}
    leaked = [os.path.basename(p) for p in visible(directory) if os.path.basename(p) not in keep]
    return sorted(names - allowed), leaked

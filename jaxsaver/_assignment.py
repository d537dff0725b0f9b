"""``init_from_checkpoint``: load a checkpoint whose names differ from the tree's (TF1 → Flax).

An ``assignment_map`` maps checkpoint names to tree names (TensorFlow's
``tf.compat.v1.train.init_from_checkpoint`` convention: checkpoint on the left):

* ``"ckpt/scope/": "params/"`` — a prefix rule (both end in ``/``): ``ckpt/scope/x`` → ``params/x``;
  ``"/"`` on the left means every name, on the right the root.
* ``"global_step": "step"`` — one name to one name.
* ``re.compile(r"layer_(\\d+)/(.*)"): r"params/Dense_\\1/\\2"`` — a regex rule, matched in full
  against checkpoint names, its replacement expanded like ``re.sub``.

Rules are tried in the order given; the first that matches a checkpoint name maps it. Every
leaf of the target must receive exactly one tensor: the error lists every unmapped leaf at
once. Checkpoint tensors that land on no leaf (optimizer slots of a TF1 checkpoint, say) are
left where they are and logged.

Example:
    >>> import re
    >>> rules = {"bert/encoder/": "params/", re.compile(r"cls/(.*)"): r"head/\\1"}
    >>> map_names(["bert/encoder/w", "cls/b", "global_step"], rules)
    {'params/w': 'bert/encoder/w', 'head/b': 'cls/b'}
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxsaver import _pipeline
from jaxsaver._errors import InvalidArgumentError, NotFoundError
from jaxsaver.builder import SaverBuilder
from jaxsaver.saveables import saveables_from_pytree, unflatten_like

__all__ = ["init_from_checkpoint", "map_names"]

logger = logging.getLogger(__name__)

Rules = Mapping[Any, str] | Sequence[tuple[Any, str]]


def _rule_items(assignment_map: Rules) -> list[tuple[Any, str]]:
    items = list(assignment_map.items()) if isinstance(assignment_map, Mapping) else list(assignment_map)
    for key, value in items:
        if not isinstance(value, str):
            raise InvalidArgumentError(f"assignment_map[{key!r}]: the tree name must be a str, got {value!r}")
        if isinstance(key, re.Pattern):
            continue
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(
                f"assignment_map keys must be non-empty checkpoint names, scopes ending in '/', or "
                f"compiled regexes, got {key!r}"
            )
        if key.endswith("/") != value.endswith("/"):
            raise InvalidArgumentError(
                f"assignment_map[{key!r}] = {value!r}: a scope ('.../') maps to a scope and a name to a name"
            )
    return items


def _apply(rules: list[tuple[Any, str]], name: str) -> str | None:
    """The tree name the first matching rule gives checkpoint name ``name`` (None if none match)."""
    for key, value in rules:
        if isinstance(key, re.Pattern):
            match = key.fullmatch(name)
            if match:
                return match.expand(value)
        elif key == "/":
            return ("" if value == "/" else value) + name
        elif key.endswith("/"):
            if name.startswith(key):
                return ("" if value == "/" else value) + name[len(key):]
        elif name == key:
            return value
    return None


def map_names(checkpoint_names: Iterable[str], assignment_map: Rules) -> dict[str, str]:
    """Applies the rules: ``{tree_name: checkpoint_name}`` for every checkpoint name a rule maps.

    Raises:
        InvalidArgumentError: a rule is malformed, or two checkpoint names map to one tree name
            (every such collision is listed).
    """
    rules = _rule_items(assignment_map)
    out: dict[str, str] = {}
    clashes = []
    for ckpt_name in checkpoint_names:
        tree_name = _apply(rules, ckpt_name)
        if tree_name is None:
            continue
        if tree_name in out:
            clashes.append(f"  {tree_name}: from {out[tree_name]} and {ckpt_name}")
            continue
        out[tree_name] = ckpt_name
    if clashes:
        raise InvalidArgumentError(
            "assignment_map maps several checkpoint tensors to one leaf:\n" + "\n".join(clashes)
        )
    return out


def init_from_checkpoint(ckpt_dir_or_file: Any, assignment_map: Rules, target: Any, *, reshape: bool = False) -> Any:
    """Returns ``target`` with every leaf loaded from the checkpoint tensor ``assignment_map`` gives it.

    Args:
        ckpt_dir_or_file: a checkpoint prefix, or a directory (its latest checkpoint).
        assignment_map: the rules (see the module docstring), a dict or a list of pairs.
        target: the pytree to fill; its dtypes, shapes and shardings are what come back
            (Python-number and weak-typed leaves follow the scalar rule).
        reshape: allow a stored tensor of another shape with as many elements.

    Returns:
        A new pytree shaped like ``target``.

    Raises:
        NotFoundError: some leaves of ``target`` receive no tensor; all are listed, with the
            checkpoint names no rule matched.
        InvalidArgumentError: a rule is malformed, two tensors map to one leaf, or shapes /
            dtypes differ (all listed).

    Example:
        >>> import os, tempfile, numpy as np
        >>> from jaxsaver import Saver
        >>> prefix = os.path.join(tempfile.mkdtemp(), "tf1")
        >>> tf1 = {"dense/kernel": np.ones((2, 2), np.float32), "global_step": np.int64(7)}
        >>> _ = Saver(tf1).save(tf1, prefix)
        >>> target = {"params": {"Dense_0": {"kernel": np.zeros((2, 2), np.float32)}}, "step": 0}
        >>> out = init_from_checkpoint(prefix, {"dense/": "params/Dense_0/", "global_step": "step"}, target)
        >>> out["step"], out["params"]["Dense_0"]["kernel"].sum()
        (7, np.float32(4.0))
    """
    with _pipeline.open_checkpoint(ckpt_dir_or_file) as reader:
        checkpoint_names = list(reader.keys())
    mapping = map_names(checkpoint_names, assignment_map)
    saveables = saveables_from_pytree(target)
    unmapped = [s.name for s in saveables if s.name not in mapping]
    if unmapped:
        used = set(mapping.values())
        unused = [n for n in checkpoint_names if n not in used]
        raise NotFoundError(
            f"assignment_map leaves {len(unmapped)} leaf/leaves of the target without a checkpoint tensor:\n"
            + "\n".join(f"  {n}" for n in unmapped)
            + ("\ncheckpoint tensors no rule maps to a leaf:\n" + "\n".join(f"  {n}" for n in unused) if unused else "")
        )
    leaf_names = {s.name for s in saveables}
    mapped = set(mapping.values())
    left = [ckpt for tree_name, ckpt in mapping.items() if tree_name not in leaf_names]
    left += [n for n in checkpoint_names if n not in mapped]
    if left:
        logger.info("init_from_checkpoint left %d checkpoint tensor(s) unused: %s", len(left), ", ".join(left))
    renamed = [
        dataclasses.replace(
            s, name=mapping[s.name], tree_name=s.name,
            specs=tuple(dataclasses.replace(spec, name=mapping[s.name]) for spec in s.specs),
        )
        for s in saveables
    ]
    leaves = _pipeline.restore(SaverBuilder(), renamed, ckpt_dir_or_file, reshape=reshape, restore_sequentially=False)
    return unflatten_like(target, renamed, {s.key: leaf for s, leaf in zip(renamed, leaves)})

"""TF2 object-based checkpoints: the ``_CHECKPOINTABLE_OBJECT_GRAPH`` name mapping, read and written.

Reading: a ``tf.train.Checkpoint`` save keys its variables by object path
(``model/layers/0/kernel/.ATTRIBUTES/VARIABLE_VALUE``); its ``TrackableObjectGraph`` (FORMAT.md
§8) names each key twice, by the path of local names from the root (``model/layers/0/kernel``,
which is how a pytree of the same shape names its leaf) and by the variable's graph name
(``full_name``, e.g. ``dense/kernel``). :class:`jaxsaver.Saver` falls back to this mapping when a
restore misses names, as TensorFlow's Saver does; :func:`saver_from_object_based_checkpoint`
builds such a saver explicitly, with an optional explicit ``names_to_keys``.

Writing: ``Saver(..., object_graph=True)`` adds a graph whose edges are the checkpoint names
split on ``/`` (and TF's ``save_counter``), so ``tf.train.Checkpoint(**modules).restore(prefix)``
loads the bundle into a ``tf.Module`` tree of the same shape.

Example:
    >>> graph = build_object_graph([("params/w", "params/w")])
    >>> names = parse_object_graph(graph.SerializeToString())
    >>> names.names_to_keys()["params/w"]
    'params/w'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from jaxsaver._errors import CheckpointNotFoundError, InvalidArgumentError, NotFoundError
from jaxsaver.interop._object_graph import OBJECT_GRAPH_KEY as OBJECT_GRAPH_KEY
from jaxsaver.interop._object_graph import SAVE_COUNTER_KEY as SAVE_COUNTER_KEY
from jaxsaver.interop._object_graph import ObjectGraphNames as ObjectGraphNames
from jaxsaver.interop._object_graph import parse_object_graph as parse_object_graph
from jaxsaver.interop._object_graph import read_object_graph as read_object_graph
from jaxsaver.interop._object_graph import object_graph_key_mapping as object_graph_key_mapping
from jaxsaver.interop._object_graph import rename_saveables as rename_saveables
from jaxsaver.interop._object_graph import object_based_saveables as object_based_saveables
from jaxsaver.interop._object_graph import escape_local_name as escape_local_name
from jaxsaver.interop._object_graph import object_key as object_key
from jaxsaver.interop._object_graph import build_object_graph as build_object_graph
from jaxsaver.interop._object_graph import with_object_graph as with_object_graph
from jaxsaver.typing import PathLike, PyTree

if TYPE_CHECKING:
    from jaxsaver.builder import SaverBuilder
    from jaxsaver.saver import Saver

__all__ = [
    "OBJECT_GRAPH_KEY",
    "SAVE_COUNTER_KEY",
    "ObjectGraphNames",
    "parse_object_graph",
    "read_object_graph",
    "object_graph_key_mapping",
    "rename_saveables",
    "object_based_saveables",
    "escape_local_name",
    "object_key",
    "build_object_graph",
    "with_object_graph",
    "saver_from_object_based_checkpoint",
]


def saver_from_object_based_checkpoint(
    checkpoint_path: PathLike,
    var_list: PyTree | None = None,
    *,
    template: PyTree | None = None,
    builder: SaverBuilder | None = None,
    names_to_keys: Mapping[str, str] | None = None,
) -> Saver:
    """A :class:`jaxsaver.Saver` reading an object-based (TF2) checkpoint by name.

    Args:
        checkpoint_path: the checkpoint (a prefix or a directory).
        var_list: as for :class:`jaxsaver.Saver`.
        template: as for :class:`jaxsaver.Saver` (one of the two is required).
        builder: as for :class:`jaxsaver.Saver`.
        names_to_keys: ``{leaf_name: checkpoint_key}``; by default read from the checkpoint's
            object graph (object paths and variable names).

    Returns:
        A saver whose ``restore(checkpoint_path, target)`` returns the template's tree.

    Raises:
        InvalidArgumentError: (a ``ValueError``) ``names_to_keys`` is None and the checkpoint is
            not object-based; neither template nor var_list is given.
        NotFoundError: some leaves are not in the checkpoint (missing and extra names listed).
    """
    from jaxsaver.saver import Saver

    if template is None and var_list is None:
        raise InvalidArgumentError("saver_from_object_based_checkpoint needs a template or a var_list")
    graph = None
    if names_to_keys is None:
        try:
            graph = read_object_graph(checkpoint_path)
        except NotFoundError as err:
            if isinstance(err, CheckpointNotFoundError):
                raise
            raise InvalidArgumentError(f"Checkpoint in {checkpoint_path} not an object-based checkpoint.") from None
        names_to_keys = graph.names_to_keys()
    saver = Saver(var_list, template=template, builder=builder)
    renamed = rename_saveables(saver.saveables, names_to_keys, graph=graph)
    saver._saveables = renamed  # noqa: SLF001  (restore reads these names, returns the tree's)
    saver._graph, _ = saver.builder.build(renamed, saver.options)  # noqa: SLF001
    return saver

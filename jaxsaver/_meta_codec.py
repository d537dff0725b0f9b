"""Saveable specs, shardings, avals and collections to and from their ``.meta`` protos (no I/O).

Dtypes are read back only from an allow-list of names and shardings only onto devices that exist,
so decoding a hostile file allocates nothing large and runs no code.

Example:
    >>> from jaxsaver.saveables import saveables_from_pytree
    >>> [s] = saveables_from_pytree({"step": 3})
    >>> back = saveable_from_proto(saveable_to_proto(s), clear_devices=False)
    >>> back.name, back.kind.value, back.dtype, back.shape
    ('step', 'int', dtype('int64'), ())
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxsaver._errors import DataLossError, InvalidArgumentError
from jaxsaver._format import dtypes as _dtypes
from jaxsaver._proto import meta_graph_pb2, tensor_shape_pb2, types_pb2
from jaxsaver.saveables import LeafKind, Saveable, SaveSpec

__all__ = [
    "aval_from_proto",
    "aval_to_proto",
    "collection_from_proto",
    "collection_to_proto",
    "saveable_from_proto",
    "saveable_to_proto",
    "sharding_from_proto",
    "sharding_to_proto",
    "tensor_info",
]

logger = logging.getLogger(__name__)

_DTYPES: dict[str, np.dtype] = {str(dt): dt for dt in _dtypes._CODE_TO_NUMPY.values()}
_KINDS = {kind.value: kind for kind in LeafKind}


def dtype_from_name(name: str, what: str) -> np.dtype:
    """A dtype from its stored name (an allow-list: numeric, ml_dtypes and ``object``)."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise DataLossError(f"{what}: unknown dtype {name!r}.") from None


def _shape(dims: Sequence[int], what: str) -> tuple[int, ...]:
    shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape) or len(shape) > 64 or math.prod(shape) >= 2**62:
        raise DataLossError(f"{what}: malformed shape {list(shape)}.")
    return shape


# ------------------------------------------------------------------------------ shardings


def sharding_to_proto(sharding: Any, what: str) -> meta_graph_pb2.ShardingDef | None:
    """A ``NamedSharding`` as mesh axes + PartitionSpec, a single-device sharding as its device id.

    Another kind of sharding (``PmapSharding``, ...) has no portable description: it is not
    recorded (the leaf restores onto the default device unless a target says otherwise) and a
    warning names the leaf, so that a save's ``.meta`` never fails a save that works.
    """
    if sharding is None:
        return None
    out = meta_graph_pb2.ShardingDef()
    memory_kind = getattr(sharding, "memory_kind", None)
    if memory_kind:
        out.memory_kind = memory_kind
    if isinstance(sharding, jax.sharding.NamedSharding):
        mesh = sharding.mesh
        out.mesh.axis_names.extend(str(a) for a in mesh.axis_names)
        out.mesh.axis_sizes.extend(int(s) for s in mesh.devices.shape)
        out.mesh.axis_types.extend(str(getattr(t, "name", t)) for t in getattr(mesh, "axis_types", ()))
        out.mesh.device_ids.extend(int(d.id) for d in mesh.devices.flat)
        for entry in sharding.spec:
            dim = out.spec.add()
            if entry is jax.sharding.PartitionSpec.UNCONSTRAINED:
                dim.unconstrained = True
            elif entry is not None:
                dim.axes.extend([entry] if isinstance(entry, str) else [str(a) for a in entry])
        return out
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        out.device_id = int(next(iter(sharding.device_set)).id)
        return out
    logger.warning(
        "%s: a %s is not recorded in the .meta; only NamedSharding (mesh + PartitionSpec) and single-device "
        "shardings are portable (export with clear_devices=True to record none).", what, type(sharding).__name__,
    )
    return None


def sharding_from_proto(proto: meta_graph_pb2.ShardingDef, what: str) -> Any:
    """The sharding a ``ShardingDef`` describes, on this process's devices.

    Raises:
        InvalidArgumentError: a device it names does not exist here (import with
            ``clear_devices=True``), or the mesh is malformed.
    """
    devices = {d.id: d for d in jax.devices()}
    memory_kind = proto.memory_kind or None
    kind = proto.WhichOneof("kind")

    def device(device_id: int) -> Any:
        if device_id not in devices:
            raise InvalidArgumentError(
                f"{what}: the sharding names device {device_id}, which this process does not have "
                f"({len(devices)} devices); import with clear_devices=True to place it on the default device."
            )
        return devices[device_id]

    if kind == "device_id":
        return jax.sharding.SingleDeviceSharding(device(proto.device_id), memory_kind=memory_kind)
    if kind != "mesh":
        raise DataLossError(f"{what}: a sharding with neither a mesh nor a device.")
    mesh = proto.mesh
    sizes = [int(s) for s in mesh.axis_sizes]
    if (len(sizes) != len(mesh.axis_names) or any(s <= 0 for s in sizes) or math.prod(sizes) != len(mesh.device_ids)
            or len(set(mesh.device_ids)) != len(mesh.device_ids)):
        raise DataLossError(f"{what}: malformed mesh {list(mesh.axis_names)} {sizes} over {len(mesh.device_ids)} devices.")
    grid = np.array([device(i) for i in mesh.device_ids], dtype=object).reshape(sizes)
    kwargs = {}
    if mesh.axis_types:
        types = jax.sharding.AxisType
        try:
            kwargs["axis_types"] = tuple(types[t] for t in mesh.axis_types)
        except KeyError:
            raise DataLossError(f"{what}: unknown mesh axis types {list(mesh.axis_types)}.") from None
    try:
        built = jax.sharding.Mesh(grid, tuple(mesh.axis_names), **kwargs)
    except (ValueError, TypeError) as err:
        raise DataLossError(f"{what}: malformed mesh: {err}") from None
    spec = []
    for dim in proto.spec:
        if dim.unconstrained:
            spec.append(jax.sharding.PartitionSpec.UNCONSTRAINED)
        elif not dim.axes:
            spec.append(None)
        else:
            spec.append(dim.axes[0] if len(dim.axes) == 1 else tuple(dim.axes))
    try:
        return jax.sharding.NamedSharding(built, jax.sharding.PartitionSpec(*spec), memory_kind=memory_kind)
    except (ValueError, TypeError) as err:
        raise DataLossError(f"{what}: malformed sharding: {err}") from None


# ------------------------------------------------------------------------------ saveables


def saveable_to_proto(saveable: Saveable, *, tree_name: str | None = None, clear_devices: bool = False
                      ) -> meta_graph_pb2.SaveableDef:
    """The spec of one saveable (``tree_name`` overrides its name in the tree)."""
    out = meta_graph_pb2.SaveableDef(
        name=saveable.name, kind=saveable.kind.value, dtype=str(saveable.dtype), shape=list(saveable.shape),
        prng_impl=saveable.prng_impl or "", weak_type=saveable.weak_type, string_kind=saveable.string_kind or "",
    )
    name_in_tree = tree_name if tree_name is not None else saveable.key
    if name_in_tree != saveable.name:
        out.tree_name = name_in_tree
    if not clear_devices:
        sharding = sharding_to_proto(saveable.sharding, saveable.name)
        if sharding is not None:
            out.sharding.CopyFrom(sharding)
    return out


def saveable_from_proto(proto: meta_graph_pb2.SaveableDef, *, clear_devices: bool, tree_prefix: str = "") -> Saveable:
    """The saveable a spec describes (``tree_prefix`` prepended to its name in the tree)."""
    what = f"Saveable {proto.name!r}"
    if not proto.name:
        raise DataLossError("A saveable without a name.")
    try:
        kind = _KINDS[proto.kind]
    except KeyError:
        raise DataLossError(f"{what}: unknown kind {proto.kind!r}.") from None
    sharding = None
    if proto.HasField("sharding") and not clear_devices:
        sharding = sharding_from_proto(proto.sharding, what)
    spec = SaveSpec(name=proto.name, dtype=dtype_from_name(proto.dtype, what), shape=_shape(proto.shape, what),
                    sharding=sharding)
    tree_name = proto.tree_name or None
    if tree_prefix:
        tree_name = f"{tree_prefix}/{tree_name or proto.name}"
    if proto.string_kind not in ("", "U", "S"):
        raise DataLossError(f"{what}: unknown string kind {proto.string_kind!r}.")
    return Saveable(
        name=proto.name, path=(), kind=kind, specs=(spec,), prng_impl=proto.prng_impl or None,
        weak_type=proto.weak_type, string_kind=proto.string_kind or None, tree_name=tree_name,
    )


def template_leaf(saveable: Saveable) -> Any:
    """The template leaf of a saveable: a ``jax.ShapeDtypeStruct`` (with its sharding, if any).

    Python and numpy scalars and numpy arrays are described by their stored dtype; a typed PRNG
    key by its key dtype; ``str``/``bytes`` leaves by ``""``/``b""`` (JAX has no string dtype).
    """
    kind = saveable.kind
    if kind is LeafKind.STR:
        return ""
    if kind is LeafKind.BYTES:
        return b""
    if kind is LeafKind.NUMPY and saveable.string_kind:
        return np.broadcast_to(np.array("" if saveable.string_kind == "U" else b""), saveable.shape)
    if kind is LeafKind.PRNG_KEY:
        try:
            key = jax.eval_shape(
                lambda data: jax.random.wrap_key_data(data, impl=saveable.prng_impl),
                jax.ShapeDtypeStruct(saveable.shape, saveable.dtype),
            )
        except (ValueError, TypeError, KeyError) as err:
            raise DataLossError(f"Saveable {saveable.name!r}: not PRNG key data of {saveable.prng_impl!r}: {err}") from None
        return jax.ShapeDtypeStruct(key.shape, key.dtype)
    return jax.ShapeDtypeStruct(saveable.shape, saveable.dtype, sharding=saveable.sharding,
                                weak_type=saveable.weak_type)


# ------------------------------------------------------------------------------ avals, signatures


def aval_to_proto(aval: Any) -> meta_graph_pb2.AvalDef:
    return meta_graph_pb2.AvalDef(dtype=str(aval.dtype), shape=[int(d) for d in aval.shape],
                                  weak_type=bool(getattr(aval, "weak_type", False)))


def aval_from_proto(proto: meta_graph_pb2.AvalDef, what: str) -> jax.ShapeDtypeStruct | str:
    """A ``ShapeDtypeStruct`` (a dtype jaxsaver does not know, e.g. a PRNG key, as its text)."""
    shape = _shape(proto.shape, what)
    if proto.dtype in _DTYPES and proto.dtype != "object":
        return jax.ShapeDtypeStruct(shape, _DTYPES[proto.dtype], weak_type=proto.weak_type)
    return f"{proto.dtype}{list(shape)}"


def tensor_info(name: str, aval: meta_graph_pb2.AvalDef) -> meta_graph_pb2.TensorInfo:
    """TensorFlow's view of one signature leaf (``DT_INVALID`` for dtypes TF does not have)."""
    code = types_pb2.DT_INVALID
    if aval.dtype in _DTYPES:
        try:
            code = _dtypes.from_numpy(_DTYPES[aval.dtype])
        except _dtypes.UnsupportedDtype:
            code = types_pb2.DT_INVALID
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in aval.shape])
    return meta_graph_pb2.TensorInfo(name=name, dtype=code, tensor_shape=shape)


# ------------------------------------------------------------------------------ collections


def collection_to_proto(name: str, values: Any, saveable_names: Mapping[int, str]) -> tuple[meta_graph_pb2.CollectionDef, str]:
    """A collection's values as a ``CollectionDef`` and jaxsaver's kind marker (``""``, ``"str"``, ``"saveables"``).

    Values are all ``bytes``, all ``str``, all ``int``, all ``float`` (stored as float32, as
    TensorFlow does; a value float32 cannot hold exactly is an error), or all saveables of the
    saver (:class:`Saveable` objects, stored by checkpoint name).

    Raises:
        InvalidArgumentError: mixed kinds, an inexact float, or a value of another type.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidArgumentError(f"Collection {name!r}: expected a list of values, got {type(values).__name__}.")
    values = list(values)
    out = meta_graph_pb2.CollectionDef()
    if not values:
        out.bytes_list.SetInParent()
        return out, ""
    if all(isinstance(v, Saveable) for v in values):
        missing = [v.name for v in values if id(v) not in saveable_names]
        if missing:
            raise InvalidArgumentError(f"Collection {name!r}: {missing} are not saveables of the exported saver.")
        out.node_list.value.extend(saveable_names[id(v)] for v in values)
        return out, "saveables"
    if all(isinstance(v, bytes) for v in values):
        out.bytes_list.value.extend(values)
        return out, ""
    if all(isinstance(v, str) for v in values):
        out.bytes_list.value.extend(v.encode("utf-8") for v in values)
        return out, "str"
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in values):
        try:
            out.int64_list.value.extend(int(v) for v in values)
        except ValueError:
            raise InvalidArgumentError(f"Collection {name!r}: a value does not fit in int64.") from None
        return out, ""
    if all(isinstance(v, (float, np.floating)) for v in values):
        inexact = [v for v in values if float(np.float32(v)) != float(v) and not math.isnan(float(v))]
        if inexact:
            raise InvalidArgumentError(
                f"Collection {name!r}: {inexact[:5]} cannot be stored exactly as float32 (TensorFlow's "
                "CollectionDef float_list); pass np.float32 values, or strings."
            )
        out.float_list.value.extend(float(v) for v in values)
        return out, ""
    kinds = sorted({type(v).__name__ for v in values})
    raise InvalidArgumentError(
        f"Collection {name!r}: values must be all bytes, all str, all int, all float or all saveables, got {kinds}."
    )


def collection_from_proto(name: str, proto: meta_graph_pb2.CollectionDef, kind: str,
                          saveables: Mapping[str, Saveable]) -> tuple:
    """A collection's values, as :func:`collection_to_proto` took them."""
    field = proto.WhichOneof("kind")
    if field is None:
        return ()
    values = list(getattr(proto, field).value)
    if kind == "saveables":
        missing = [v for v in values if v not in saveables]
        if missing:
            raise DataLossError(f"Collection {name!r}: {missing} are not saveables of the saver.")
        return tuple(saveables[v] for v in values)
    if kind == "str":
        try:
            return tuple(v.decode("utf-8") for v in values)
        except (UnicodeDecodeError, AttributeError):
            raise DataLossError(f"Collection {name!r}: a string is not UTF-8.") from None
    if field == "float_list":
        return tuple(float(v) for v in values)
    return tuple(values)

"""Pytree leaves as named saveables: checkpoint names, leaf kinds and host conversion."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 & co. with numpy)
import numpy as np

from jaxsaver._errors import InvalidArgumentError
from jaxsaver._naming import check_unique, named_leaves, select_by_identity
from jaxsaver._naming import key_path_to_name as key_path_to_name

__all__ = [
    "LeafKind",
    "SaveSpec",
    "Saveable",
    "leaf_kind",
    "key_path_to_name",
    "saveables_from_pytree",
    "flatten_values",
    "unflatten_like",
]

_INT64 = np.iinfo(np.int64)
_OBJECT = np.dtype(object)


class LeafKind(str, enum.Enum):
    """What a pytree leaf is, which decides how it is stored and rebuilt."""

    JAX_ARRAY = "jax_array"
    PRNG_KEY = "prng_key"
    NUMPY = "numpy"
    NUMPY_SCALAR = "numpy_scalar"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STR = "str"
    BYTES = "bytes"


@dataclass(frozen=True, slots=True, kw_only=True)
class SaveSpec:
    """One tensor (or slice of one) as it is written to a checkpoint.

    Example:
        >>> SaveSpec(name="w", dtype=np.dtype("float32"), shape=(2, 3)).slice_spec
        ''
    """

    name: str
    """Checkpoint key."""
    slice_spec: str = ""
    """TF slice string; ``""`` means the whole tensor."""
    dtype: np.dtype
    """Storage dtype (a numpy / ml_dtypes dtype; ``np.dtype(object)`` for strings)."""
    shape: tuple[int, ...]
    """Full tensor shape as stored."""
    sharding: Any = None
    """The ``jax.sharding.Sharding`` of a jax.Array leaf (of the key data for PRNG keys), else None."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Saveable:
    """A named pytree leaf: how to turn its values into host tensors and back.

    Example:
        >>> [s] = saveables_from_pytree({"step": 3})
        >>> s.name, s.kind.value, s.dtype, s.shape
        ('step', 'int', dtype('int64'), ())
        >>> s.from_host(s.to_host(7))
        7
    """

    name: str
    """Checkpoint name, e.g. ``"params/Dense_0/kernel"``."""
    path: tuple
    """The jax key path of the leaf in the tree it came from."""
    kind: LeafKind
    """The kind of the template leaf."""
    specs: tuple[SaveSpec, ...]
    """The tensors written for this leaf (one full-tensor spec for now)."""
    prng_impl: str | None = None
    """PRNG implementation name (e.g. ``"threefry2x32"``) of a typed key array."""
    weak_type: bool = False
    """jax ``weak_type`` of the template leaf, restored as such."""
    string_kind: str | None = None
    """``"U"`` or ``"S"`` for a numpy str/bytes array leaf (stored as DT_STRING, restored as such)."""
    tree_name: str | None = None
    """The leaf's name in the template when the checkpoint name differs (a ``var_list`` rename)."""

    @property
    def key(self) -> str:
        """The name values are looked up by in a values tree: ``tree_name`` or ``name``."""
        return self.tree_name or self.name

    def device_leaf(self, array: jax.Array) -> jax.Array:
        """A restored device array as this saveable's leaf (weak-typed if the template was)."""
        return _as_weak(array) if self.weak_type else array

    def for_leaf(self, leaf: Any) -> Saveable:
        """This saveable re-derived from another tree's leaf (a restore target): same names,
        the leaf's kind, dtype, shape and sharding."""
        out = _make_saveable(self.name, self.path, leaf)
        return dataclasses.replace(out, tree_name=self.tree_name)

    @property
    def dtype(self) -> np.dtype:
        """Storage dtype of the leaf."""
        return self.specs[0].dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """Stored shape of the leaf (for PRNG keys: the key data's shape)."""
        return self.specs[0].shape

    @property
    def sharding(self) -> Any:
        """Sharding of the template leaf's stored tensor, or None."""
        return self.specs[0].sharding

    def to_host(self, leaf: Any) -> np.ndarray | jax.Array:
        """Returns the value to store for ``leaf``, checked against this saveable's shape and dtype.

        A jax.Array is returned as is (the caller transfers it); a PRNG key array as its key data;
        everything else as a numpy array of the stored dtype (strings as 0-d object arrays of
        utf-8 bytes).

        Args:
            leaf: A value of the same kind as the template leaf.

        Returns:
            A jax.Array (JAX_ARRAY, PRNG_KEY) or a numpy array.

        Raises:
            InvalidArgumentError: The value's kind, shape or dtype does not match.

        Example:
            >>> [s] = saveables_from_pytree({"name": "abc"})
            >>> s.to_host("héllo")[()]
            b'h\\xc3\\xa9llo'
        """
        kind = self.kind
        if kind is LeafKind.PRNG_KEY:
            if not _is_typed_key(leaf):
                self._mismatch("a typed PRNG key array", _describe(leaf))
            impl = _key_impl_name(leaf)
            if self.prng_impl is not None and impl != self.prng_impl:
                self._mismatch(f"PRNG impl {self.prng_impl}", f"PRNG impl {impl}")
            value = jax.random.key_data(leaf)
        elif kind is LeafKind.JAX_ARRAY:
            if _is_typed_key(leaf):
                self._mismatch(_describe_spec(self), _describe(leaf))
            value = leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)
        elif kind is LeafKind.NUMPY:
            value = _strings_to_object(np.asarray(leaf))
        elif kind is LeafKind.NUMPY_SCALAR:
            value = np.asarray(leaf)
        elif kind in (LeafKind.INT, LeafKind.FLOAT, LeafKind.BOOL):
            value = self._python_scalar_to_host(leaf)
        elif kind is LeafKind.STR:
            if not isinstance(leaf, str):
                self._mismatch("a str", _describe(leaf))
            value = _object_scalar(leaf.encode("utf-8"))
        elif kind is LeafKind.BYTES:
            if not isinstance(leaf, bytes):
                self._mismatch("bytes", _describe(leaf))
            value = _object_scalar(bytes(leaf))
        else:  # pragma: no cover - exhaustive
            raise AssertionError(kind)
        if tuple(value.shape) != self.shape or np.dtype(value.dtype) != self.dtype:
            self._mismatch(_describe_spec(self), f"{np.dtype(value.dtype)}{list(value.shape)}")
        return value

    def from_host(self, array: np.ndarray, *, sharding: Any = None) -> Any:
        """Rebuilds a leaf of this saveable's kind from a host array of the stored dtype and shape.

        Args:
            array: Host array as read from a checkpoint.
            sharding: Sharding for JAX_ARRAY / PRNG_KEY leaves (of the stored data); defaults to
                the template's.

        Returns:
            A jax.Array (weak-typed if the template was), a typed PRNG key array, a numpy array or
            scalar, or a Python int / float / bool / str / bytes.

        Raises:
            InvalidArgumentError: ``array`` does not have the stored dtype and shape.

        Example:
            >>> [s] = saveables_from_pytree({"lr": 0.1})
            >>> s.from_host(np.array(0.25))
            0.25
        """
        array = np.asarray(array)
        if tuple(array.shape) != self.shape or array.dtype != self.dtype:
            self._mismatch(_describe_spec(self), f"{array.dtype}{list(array.shape)}")
        kind = self.kind
        if kind is LeafKind.JAX_ARRAY:
            return self.device_leaf(jax.device_put(array, sharding if sharding is not None else self.sharding))
        if kind is LeafKind.PRNG_KEY:
            data = jax.device_put(array, sharding if sharding is not None else self.sharding)
            return jax.random.wrap_key_data(data, impl=self.prng_impl)
        if kind is LeafKind.NUMPY:
            if self.string_kind == "U":
                return np.array([x.decode("utf-8") for x in array.reshape(-1)], dtype=str).reshape(array.shape)
            if self.string_kind == "S":
                return np.array(list(array.reshape(-1)), dtype=bytes).reshape(array.shape)
            return array
        if kind is LeafKind.NUMPY_SCALAR:
            return array[()]
        if kind is LeafKind.INT:
            return int(array[()])
        if kind is LeafKind.FLOAT:
            return float(array[()])
        if kind is LeafKind.BOOL:
            return bool(array[()])
        if kind is LeafKind.STR:
            item = array[()]
            return item.decode("utf-8") if isinstance(item, bytes) else str(item)
        if kind is LeafKind.BYTES:
            item = array[()]
            return item.encode("utf-8") if isinstance(item, str) else bytes(item)
        raise AssertionError(kind)  # pragma: no cover - exhaustive

    def _python_scalar_to_host(self, leaf: Any) -> np.ndarray:
        """Converts an int / float / bool value (Python, numpy or 0-d array) to the stored dtype.

        0-d jax / numpy arrays are accepted too: a Python ``step`` becomes a jax int32 array once
        it went through ``jax.jit``.
        """
        kind = self.kind
        if isinstance(leaf, (bool, np.bool_)):
            category = "b"
        elif isinstance(leaf, (int, np.integer)):
            category = "i"
        elif isinstance(leaf, (float, np.floating)):
            category = "f"
        elif isinstance(leaf, (jax.Array, np.ndarray)) and leaf.shape == () and not _is_typed_key(leaf):
            dt = leaf.dtype
            category = (
                "b" if dt == np.bool_
                else "i" if jax.dtypes.issubdtype(dt, np.integer)
                else "f" if jax.dtypes.issubdtype(dt, np.floating)
                else "?"
            )
        else:
            category = "?"
        allowed = {LeafKind.BOOL: "b", LeafKind.INT: "i", LeafKind.FLOAT: "if"}[kind]
        if category not in allowed:
            self._mismatch(f"a Python {kind.value}", _describe(leaf))
        if kind is LeafKind.INT and isinstance(leaf, int) and not _INT64.min <= leaf <= _INT64.max:
            raise InvalidArgumentError(f"{self.name}: Python int {leaf} does not fit in int64.")
        return np.asarray(leaf).astype(self.dtype)

    def _mismatch(self, expected: str, actual: str) -> None:
        raise InvalidArgumentError(
            f"{self.name}: value does not match the saved variable: "
            f"expected {expected}, got {actual}."
        )


def leaf_kind(x: Any) -> LeafKind:
    """Classifies a pytree leaf; this is the one dispatch table for leaf types.

    A ``jax.ShapeDtypeStruct`` is accepted as a template for a jax array (or a typed PRNG key).

    Args:
        x: A pytree leaf.

    Returns:
        Its ``LeafKind``.

    Raises:
        InvalidArgumentError: ``x`` is of a type jaxsaver cannot store.

    Example:
        >>> leaf_kind(True), leaf_kind(np.float32(1)), leaf_kind(jax.random.key(0))
        (<LeafKind.BOOL: 'bool'>, <LeafKind.NUMPY_SCALAR: 'numpy_scalar'>, <LeafKind.PRNG_KEY: 'prng_key'>)
    """
    if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)):
        return LeafKind.PRNG_KEY if _is_typed_key(x) else LeafKind.JAX_ARRAY
    if isinstance(x, np.ndarray):
        return LeafKind.NUMPY
    # str / bytes before np.generic (np.str_ and np.bytes_ are both), np.generic before float
    # (np.float64 subclasses float), bool before int (bool subclasses int).
    if isinstance(x, str):
        return LeafKind.STR
    if isinstance(x, bytes):
        return LeafKind.BYTES
    if isinstance(x, np.generic):
        return LeafKind.NUMPY_SCALAR
    if isinstance(x, bool):
        return LeafKind.BOOL
    if isinstance(x, int):
        return LeafKind.INT
    if isinstance(x, float):
        return LeafKind.FLOAT
    raise InvalidArgumentError(f"Cannot save a leaf of type {type(x).__module__}.{type(x).__qualname__}.")


def saveables_from_pytree(tree: Any, var_list: Any = None) -> list[Saveable]:
    """Builds the saveables of a pytree, TF ``Saver``-style.

    Names are the leaves' key paths joined by ``"/"`` (see ``key_path_to_name``); ``None`` is an
    empty subtree. ``flax.nnx`` Variables are looked through: ``nnx.state(model)`` gives
    ``linear/kernel``, not ``linear/kernel/value``.

    Args:
        tree: The pytree (may be None when ``var_list`` is a dict, or a list to be named by its
            own positions).
        var_list: None for every leaf of ``tree``; a dict ``{name: leaf_or_subtree}`` naming leaves
            ``name`` and ``name/<subpath>``; or a list / tuple of leaves or subtrees of ``tree``,
            found in ``tree`` by identity and named by their path there (by their path inside
            the list when ``tree`` is None).

    Returns:
        The saveables, in the flatten order of the source.

    Raises:
        InvalidArgumentError: A leaf type cannot be saved, a name is empty, or a ``var_list``
            element is not in ``tree``.
        ValueError: Two leaves map to the same name.

    Example:
        >>> tree = {"params": {"w": np.zeros((2, 3), np.float32)}, "step": 0, "aux": None}
        >>> [(s.name, s.kind.value) for s in saveables_from_pytree(tree)]
        [('params/w', 'numpy'), ('step', 'int')]
        >>> [s.name for s in saveables_from_pytree(None, {"global_step": 5})]
        ['global_step']
    """
    if var_list is None:
        entries = list(named_leaves(tree))
    elif isinstance(var_list, Mapping):
        for key in var_list:
            if not isinstance(key, str) or not key:
                raise InvalidArgumentError(
                    f"var_list dict keys must be non-empty str checkpoint names, got {key!r}."
                )
        entries = list(named_leaves(dict(var_list)))
        if tree is not None:
            tree_names = _renamed_tree_names(tree, var_list)
            check_unique(entries)
            return [
                dataclasses.replace(_make_saveable(name, path, leaf), tree_name=tree_names[name])
                for name, path, leaf in entries
            ]
    elif isinstance(var_list, (list, tuple)):
        entries = (
            list(named_leaves(list(var_list)))
            if tree is None
            else select_by_identity(tree, var_list)
        )
    else:
        raise InvalidArgumentError(
            f"var_list must be None, a dict or a list/tuple, got {type(var_list).__name__}."
        )
    check_unique(entries)
    return [_make_saveable(name, path, leaf) for name, path, leaf in entries]


def flatten_values(
    tree: Any, saveables: Sequence[Saveable], *, template_treedef: Any = None, allow_extra: bool = True
) -> list[Any]:
    """Returns the leaves of a values tree aligned with ``saveables``.

    Names are recomputed on ``tree`` with the naming rules of ``saveables_from_pytree`` and
    looked up, so ``tree`` may also be a superset (a full tree for a saver built from a var_list
    list). For a saver built from a var_list dict, pass a dict with the same keys.

    Args:
        tree: A tree with the structure of the template the saveables came from.
        saveables: The saveables, from ``saveables_from_pytree``.
        template_treedef: If given, ``tree``'s structure must equal it exactly.
        allow_extra: accept leaves no saveable names (a subset saver); when False they are an
            error listing every one, so a save never drops a leaf silently.

    Returns:
        One leaf per saveable, in the same order.

    Raises:
        InvalidArgumentError: A name is missing in ``tree`` (or the structure differs from
            ``template_treedef``); the message lists missing and unexpected names.

    Example:
        >>> saveables = saveables_from_pytree({"a": 1, "b": {"c": 2.0}})
        >>> flatten_values({"b": {"c": 5.0}, "a": 4}, saveables)
        [4, 5.0]
    """
    named = list(named_leaves(tree))
    check_unique(named)
    by_name = {name: leaf for name, _, leaf in named}
    wanted = [s.key for s in saveables]
    missing = [n for n in wanted if n not in by_name]
    treedef_differs = template_treedef is not None and jax.tree_util.tree_structure(tree) != template_treedef
    wanted_set = set(wanted)
    unexpected = [n for n in by_name if n not in wanted_set]
    if missing or treedef_differs or (unexpected and not allow_extra):
        lines = [
            "The values tree does not match the saved variables' structure"
            + (" (nothing is saved: a save writes every leaf it is given or none)." if unexpected else ".")
        ]
        lines += [f"  missing: {n}" for n in missing]
        lines += [f"  unexpected: {n}" for n in unexpected]
        if treedef_differs and not (missing or unexpected):
            lines.append(f"  expected structure: {template_treedef}")
            lines.append(f"  actual structure:   {jax.tree_util.tree_structure(tree)}")
        raise InvalidArgumentError("\n".join(lines))
    return [by_name[n] for n in wanted]


def unflatten_like(template_tree: Any, saveables: Sequence[Saveable], leaves_by_name: Mapping[str, Any]) -> Any:
    """Rebuilds a tree with ``template_tree``'s structure, replacing the named leaves.

    Leaves whose name is not in ``leaves_by_name`` keep the template's leaf. The caller's tree is
    not mutated.

    Args:
        template_tree: The tree whose structure to rebuild (the full tree, or a var_list dict).
        saveables: The saver's saveables; every name in ``leaves_by_name`` must be one of them.
        leaves_by_name: New leaves by their name in ``template_tree`` (:attr:`Saveable.key`).

    Returns:
        A new tree.

    Raises:
        InvalidArgumentError: A name in ``leaves_by_name`` is not a saveable or not in the template.

    Example:
        >>> tree = {"a": 1, "b": [2.0, "x"]}
        >>> unflatten_like(tree, saveables_from_pytree(tree), {"b/0": 3.0})
        {'a': 1, 'b': [3.0, 'x']}
    """
    named = list(named_leaves(template_tree))
    known = {s.key for s in saveables}
    template_names = {name for name, _, _ in named}
    unknown = [n for n in leaves_by_name if n not in known or n not in template_names]
    if unknown:
        raise InvalidArgumentError(
            "Cannot place leaves that are not saved variables of this tree:\n"
            + "\n".join(f"  {n}" for n in unknown)
        )
    leaves = [leaves_by_name.get(name, leaf) for name, _, leaf in named]
    treedef = jax.tree_util.tree_structure(template_tree)
    return jax.tree_util.tree_unflatten(treedef, leaves)


# ----------------------------------------------------------------------------- leaf helpers


def _renamed_tree_names(tree: Any, var_list: Mapping[str, Any]) -> dict[str, str]:
    """For a ``{checkpoint_name: subtree}`` var_list over ``tree``: checkpoint name -> tree name.

    Each subtree is found in ``tree`` by identity (the node itself, or for a bare leaf the one
    leaf that is it); a subtree found nowhere, or at several places, is an error naming it.
    """
    out: dict[str, str] = {}
    problems = []
    name_of_path = {tuple(path): name for name, path, _ in named_leaves(tree)}
    for ckpt_name, subtree in var_list.items():
        places = [
            path for path, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is subtree)[0]
            if node is subtree
        ]
        if len(places) != 1:
            where = "is not in the tree" if not places else (
                "is at several places in the tree: " + ", ".join(jax.tree_util.keystr(p) for p in places)
            )
            problems.append(f"  {ckpt_name}: the value {where}")
            continue
        base = places[0]
        for sub_name, sub_path, _ in named_leaves({ckpt_name: subtree}):
            out[sub_name] = name_of_path[tuple(base) + tuple(sub_path[1:])]
    if problems:
        raise InvalidArgumentError(
            "var_list renames leaves of the template, so each value must be a leaf or subtree "
            "of it (found by identity):\n" + "\n".join(problems)
        )
    return out


def _make_saveable(name: str, path: tuple, leaf: Any) -> Saveable:
    """The saveable for one template leaf."""
    try:
        kind = leaf_kind(leaf)
    except InvalidArgumentError as e:
        raise InvalidArgumentError(f"Leaf {name!r} (key path {jax.tree_util.keystr(path)}): {e}") from None
    prng_impl = None
    weak_type = False
    string_kind = None
    sharding = None
    if kind is LeafKind.JAX_ARRAY:
        dtype, shape = np.dtype(leaf.dtype), tuple(leaf.shape)
        sharding = getattr(leaf, "sharding", None)
        weak_type = bool(getattr(leaf, "weak_type", False))
    elif kind is LeafKind.PRNG_KEY:
        if isinstance(leaf, jax.Array):
            data = jax.random.key_data(leaf)
            prng_impl = _key_impl_name(leaf)
            sharding = data.sharding
        else:  # ShapeDtypeStruct of a key dtype: learn data shape and impl abstractly (sharding: None).
            found: list[str] = []

            def _probe(k: Any) -> Any:
                found.append(_key_impl_name(k))
                return jax.random.key_data(k)

            data = jax.eval_shape(_probe, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
            prng_impl = found[0]
        dtype, shape = np.dtype(data.dtype), tuple(data.shape)
    elif kind is LeafKind.NUMPY:
        dtype = _OBJECT if leaf.dtype.kind in "OUS" else leaf.dtype
        string_kind = leaf.dtype.kind if leaf.dtype.kind in "US" else None
        shape = tuple(leaf.shape)
    elif kind is LeafKind.NUMPY_SCALAR:
        dtype, shape = leaf.dtype, ()
    elif kind is LeafKind.BOOL:
        dtype, shape = np.dtype(np.bool_), ()
    elif kind is LeafKind.INT:
        if not _INT64.min <= leaf <= _INT64.max:
            raise InvalidArgumentError(
                f"Leaf {name!r} (key path {jax.tree_util.keystr(path)}): Python int {leaf} does not fit in int64."
            )
        dtype, shape = np.dtype(np.int64), ()
    elif kind is LeafKind.FLOAT:
        dtype, shape = np.dtype(np.float64), ()
    else:  # STR, BYTES
        dtype, shape = _OBJECT, ()
    spec = SaveSpec(name=name, dtype=np.dtype(dtype), shape=shape, sharding=sharding)
    return Saveable(
        name=name, path=tuple(path), kind=kind, specs=(spec,), prng_impl=prng_impl, weak_type=weak_type,
        string_kind=string_kind,
    )


def _is_typed_key(x: Any) -> bool:
    """Whether ``x`` (an array or ShapeDtypeStruct) has a typed PRNG key dtype."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _key_impl_name(key: Any) -> str:
    """The impl name of a typed key array, accepted by ``jax.random.wrap_key_data(impl=...)``."""
    impl = jax.random.key_impl(key)
    return impl if isinstance(impl, str) else str(getattr(impl, "name", impl))


def _as_weak(x: jax.Array) -> jax.Array:
    """Marks ``x`` weakly typed (there is no public API for this; falls back to ``x``)."""
    try:
        from jax._src.lax import lax as lax_internal

        return lax_internal._convert_element_type(x, x.dtype, weak_type=True)
    except (ImportError, AttributeError, TypeError, AssertionError):  # pragma: no cover - jax internals moved
        return x


def _object_scalar(value: Any) -> np.ndarray:
    """A 0-d object array holding ``value``."""
    out = np.empty((), dtype=object)
    out[()] = value
    return out


def _strings_to_object(array: np.ndarray) -> np.ndarray:
    """Numpy string arrays as object arrays of bytes (str encoded as utf-8); others unchanged."""
    if array.dtype.kind not in "OUS":
        return array
    out = np.empty(array.shape, dtype=object)
    for index, item in np.ndenumerate(array):
        out[index] = item.encode("utf-8") if isinstance(item, str) else item
    return out


def _describe(x: Any) -> str:
    """Short description of a value for error messages."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None and hasattr(x, "shape"):
        return f"{type(x).__name__} {dtype}{list(x.shape)}"
    return f"{type(x).__name__} {x!r}"[:120]


def _describe_spec(s: Saveable) -> str:
    """``dtype[shape]`` of a saveable."""
    return f"{s.dtype}{list(s.shape)}"

"""TensorFlow DataType codes <-> numpy / ml_dtypes dtypes.

``ml_dtypes`` (bfloat16, float8, int4, ...) is imported on first use of one of its types: it is
the slowest import on the read path, and most checkpoints a reader opens do not need it.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from jaxsaver._proto import types_pb2
from jaxsaver._errors import InvalidArgumentError

__all__ = ["to_numpy", "from_numpy", "name_of", "tf_name", "is_string", "UnsupportedDtype"]


class UnsupportedDtype(InvalidArgumentError):
    """A DataType with no numpy equivalent (resource, variant, quantized-only, invalid)."""


_CODE_TO_NUMPY: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_STRING: np.dtype(object),
    types_pb2.DT_COMPLEX64: np.dtype(np.complex64),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    # Quantized types are stored as their base integers.
    types_pb2.DT_QINT8: np.dtype(np.int8),
    types_pb2.DT_QUINT8: np.dtype(np.uint8),
    types_pb2.DT_QINT16: np.dtype(np.int16),
    types_pb2.DT_QUINT16: np.dtype(np.uint16),
    types_pb2.DT_QINT32: np.dtype(np.int32),
}

_ML_DTYPES: dict[int, str] = {
    types_pb2.DT_BFLOAT16: "bfloat16",
    types_pb2.DT_FLOAT8_E5M2: "float8_e5m2",
    types_pb2.DT_FLOAT8_E4M3FN: "float8_e4m3fn",
    types_pb2.DT_FLOAT8_E4M3FNUZ: "float8_e4m3fnuz",
    types_pb2.DT_FLOAT8_E4M3B11FNUZ: "float8_e4m3b11fnuz",
    types_pb2.DT_FLOAT8_E5M2FNUZ: "float8_e5m2fnuz",
    types_pb2.DT_INT4: "int4",
    types_pb2.DT_UINT4: "uint4",
    types_pb2.DT_INT2: "int2",
    types_pb2.DT_UINT2: "uint2",
    types_pb2.DT_FLOAT4_E2M1FN: "float4_e2m1fn",
}
"""Codes held by ml_dtypes types, by attribute name (resolved on first use)."""

_QUANTIZED = {
    types_pb2.DT_QINT8,
    types_pb2.DT_QUINT8,
    types_pb2.DT_QINT16,
    types_pb2.DT_QUINT16,
    types_pb2.DT_QINT32,
}

_NUMPY_TO_CODE: dict[np.dtype, int] = {
    dt: code for code, dt in _CODE_TO_NUMPY.items() if code not in _QUANTIZED
}
_ML_LOADED = False
_ML_LOCK = threading.Lock()


def _load_ml_dtypes() -> None:
    """Adds the ml_dtypes types to both tables (imports ml_dtypes once)."""
    global _ML_LOADED
    with _ML_LOCK:
        if _ML_LOADED:
            return
        import ml_dtypes

        for code, attr in _ML_DTYPES.items():
            dtype = np.dtype(getattr(ml_dtypes, attr))
            _CODE_TO_NUMPY[code] = dtype
            _NUMPY_TO_CODE[dtype] = code
        _ML_LOADED = True


def name_of(code: int) -> str:
    """``DT_FLOAT`` style name of a code (``DT_<n>`` for unknown codes)."""
    try:
        return types_pb2.DataType.Name(code)
    except ValueError:
        return f"DT_INVALID({code})"


# TensorFlow's ``DType.name`` is the enum name in lower case, but for these three.
_TF_NAME_EXCEPTIONS = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_HALF": "float16"}


def tf_name(code: int) -> str:
    """TensorFlow's ``DType.name`` of a code (``dtype<n>`` for unknown codes).

    Example:
        >>> tf_name(1), tf_name(19), tf_name(14), tf_name(7), tf_name(999)
        ('float32', 'float16', 'bfloat16', 'string', 'dtype999')
    """
    try:
        enum = types_pb2.DataType.Name(code)
    except ValueError:
        return f"dtype{code}"
    if code == 0 or enum.endswith("_REF"):
        return f"dtype{code}"
    return _TF_NAME_EXCEPTIONS.get(enum, enum[len("DT_"):].lower())


def to_numpy(code: int) -> np.dtype:
    """The numpy dtype that holds a stored DataType.

    Example:
        >>> to_numpy(14)
        dtype(bfloat16)
    """
    if code in _ML_DTYPES:
        _load_ml_dtypes()
    try:
        return _CODE_TO_NUMPY[code]
    except KeyError:
        raise UnsupportedDtype(f"{name_of(code)} has no numpy equivalent") from None


def from_numpy(dtype: np.dtype) -> int:
    """The DataType code for a numpy dtype (object dtype = DT_STRING)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "SU":
        return types_pb2.DT_STRING
    if dtype not in _NUMPY_TO_CODE and "ml_dtypes" in sys.modules:  # an ml_dtypes dtype exists only then
        _load_ml_dtypes()
    try:
        return _NUMPY_TO_CODE[dtype]
    except KeyError:
        raise UnsupportedDtype(f"numpy dtype {dtype} has no TensorFlow DataType") from None


def is_string(code: int) -> bool:
    return code == types_pb2.DT_STRING

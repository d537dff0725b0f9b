"""TensorFlow DataType codes <-> numpy / ml_dtypes dtypes."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from jaxsaver._proto import types_pb2

__all__ = ["to_numpy", "from_numpy", "name_of", "is_string", "UnsupportedDtype"]


class UnsupportedDtype(ValueError):
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
    types_pb2.DT_BFLOAT16: np.dtype(ml_dtypes.bfloat16),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_FLOAT8_E5M2: np.dtype(ml_dtypes.float8_e5m2),
    types_pb2.DT_FLOAT8_E4M3FN: np.dtype(ml_dtypes.float8_e4m3fn),
    types_pb2.DT_FLOAT8_E4M3FNUZ: np.dtype(ml_dtypes.float8_e4m3fnuz),
    types_pb2.DT_FLOAT8_E4M3B11FNUZ: np.dtype(ml_dtypes.float8_e4m3b11fnuz),
    types_pb2.DT_FLOAT8_E5M2FNUZ: np.dtype(ml_dtypes.float8_e5m2fnuz),
    types_pb2.DT_INT4: np.dtype(ml_dtypes.int4),
    types_pb2.DT_UINT4: np.dtype(ml_dtypes.uint4),
    types_pb2.DT_INT2: np.dtype(ml_dtypes.int2),
    types_pb2.DT_UINT2: np.dtype(ml_dtypes.uint2),
    types_pb2.DT_FLOAT4_E2M1FN: np.dtype(ml_dtypes.float4_e2m1fn),
    # Quantized types are stored as their base integers.
    types_pb2.DT_QINT8: np.dtype(np.int8),
    types_pb2.DT_QUINT8: np.dtype(np.uint8),
    types_pb2.DT_QINT16: np.dtype(np.int16),
    types_pb2.DT_QUINT16: np.dtype(np.uint16),
    types_pb2.DT_QINT32: np.dtype(np.int32),
}

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


def name_of(code: int) -> str:
    """``DT_FLOAT`` style name of a code (``DT_<n>`` for unknown codes)."""
    try:
        return types_pb2.DataType.Name(code)
    except ValueError:
        return f"DT_INVALID({code})"


def to_numpy(code: int) -> np.dtype:
    """The numpy dtype that holds a stored DataType.

    Example:
        >>> to_numpy(14)
        dtype(bfloat16)
    """
    try:
        return _CODE_TO_NUMPY[code]
    except KeyError:
        raise UnsupportedDtype(f"{name_of(code)} has no numpy equivalent") from None


def from_numpy(dtype: np.dtype) -> int:
    """The DataType code for a numpy dtype (object dtype = DT_STRING)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "SU":
        return types_pb2.DT_STRING
    try:
        return _NUMPY_TO_CODE[dtype]
    except KeyError:
        raise UnsupportedDtype(f"numpy dtype {dtype} has no TensorFlow DataType") from None


def is_string(code: int) -> bool:
    return code == types_pb2.DT_STRING

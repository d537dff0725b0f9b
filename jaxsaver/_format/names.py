"""Tensor names as index keys, their display in messages, and the names jaxsaver writes itself.

Example:
    >>> encode_name("params/w"), display_key(b"params/\\xff")
    (b'params/w', 'params/\\\\xff')
"""

from __future__ import annotations

from jaxsaver._errors import InvalidArgumentError

__all__ = ["TREE_COLLECTION", "display_key", "encode_name"]

#: The MetaGraphDef collection holding a saver's pytree structure (written by ``Saver``, read by
#: ``CheckpointReader`` and the inspection tools).
TREE_COLLECTION = "jaxsaver_tree"


def encode_name(name: str | bytes) -> bytes:
    """A tensor name as its key bytes (str is UTF-8; lone surrogates carry raw bytes).

    Raises:
        InvalidArgumentError: ``name`` is neither str nor bytes.
    """
    if isinstance(name, bytes):
        return name
    if not isinstance(name, str):
        raise InvalidArgumentError(f"tensor names are str or bytes, got {type(name).__name__}")
    return name.encode("utf-8", "surrogateescape")


def display_key(key: bytes) -> str:
    """A key for messages: UTF-8 with escapes, at most 200 characters."""
    text = key.decode("utf-8", "backslashreplace")
    return text if len(text) <= 200 else text[:200] + f"... ({len(key)} bytes)"

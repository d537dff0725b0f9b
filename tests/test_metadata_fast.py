"""The metadata fast path (``BundleReader.list_metadata`` / ``metadata_columns`` /
``debug_entries``, which read entries without protobuf where they can) agrees with the protobuf
path (``BundleReader.infos``) on every corpus bundle, on hand-made odd entries and on random
corruptions of an entry: same names, dtypes and shapes, or the same typed error."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from bundle_helpers import build_corpus, write_ours
from jaxsaver import BundleReader, DataLossError, JaxsaverError
from jaxsaver._proto import tensor_bundle_pb2
from jaxsaver._bundle.metadata import decode_key, decode_keys
from jaxsaver._format.slices import encode_slice_key, slice_to_proto
from jaxsaver._format.table import TableBuilder
from jaxsaver._format.tensors import make_header
from jaxsaver._format.varint import encode_varint
from jaxsaver.reader import CheckpointReader, DType, list_variables

CORPUS = build_corpus()


def _reference(prefix):
    """What the protobuf path says, or the type of error it raises."""
    try:
        with BundleReader(prefix) as reader:
            infos = list(reader.infos())
            raw = [(k, reader.info(k)) for k in reader.raw_keys()]
    except JaxsaverError as err:
        return type(err)
    metadata = [(i.name, i.dtype_code, i.shape) for i in infos]
    debug = [(k.encode("utf-8", "surrogateescape"), i.dtype_code, i.shape) for k, i in raw if not i.is_sliced]
    return metadata, debug


def _fast(prefix):
    try:
        with BundleReader(prefix) as reader:
            metadata = reader.list_metadata()
        with BundleReader(prefix) as reader:
            debug = reader.debug_entries()
    except JaxsaverError as err:
        return type(err)
    return metadata, debug


def _assert_agree(prefix):
    want = _reference(prefix)
    got = _fast(prefix)
    assert got == want
    if isinstance(want, tuple):
        with CheckpointReader(prefix) as reader:
            assert reader.get_variable_to_shape_map() == {n: list(s) for n, _, s in want[0]}
            assert reader.get_variable_to_dtype_map() == {n: DType(d) for n, d, _ in want[0]}
            assert reader.keys() == [n for n, _, _ in want[0]] and len(reader) == len(want[0])
        assert list_variables(prefix) == sorted((n, list(s)) for n, _, s in want[0])
    return want


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_corpus(tmp_path, case):
    prefix = str(tmp_path / "ckpt")
    write_ours(prefix, CORPUS[case])
    want = _assert_agree(prefix)
    assert isinstance(want, tuple) and want[0]


def _craft(tmp_path, entries):
    """A bundle whose index holds ``entries`` (key bytes -> raw value bytes or a proto)."""
    builder = TableBuilder()
    builder.add(b"", make_header(1).SerializeToString())
    for key in sorted(entries):
        value = entries[key]
        builder.add(key, value if isinstance(value, bytes) else value.SerializeToString())
    prefix = str(tmp_path / f"c{random.getrandbits(32)}")
    with open(prefix + ".index", "wb") as f:
        f.write(builder.finish())
    return prefix


def _v(n):
    return encode_varint(n)


def _entry_bytes(dtype=1, dims=(2,), tail=b""):
    shape = b"".join(b"\x12" + _v(len(d)) + d for d in ((b"\x08" + _v(x)) if x else b"" for x in dims))
    return b"\x08" + _v(dtype) + b"\x12" + _v(len(shape)) + shape + tail


_TAIL = b"\x20\x08\x28\x08\x35\x01\x02\x03\x04"
_ODD = {
    "plain": _entry_bytes(),
    "scalar": _entry_bytes(dims=()),
    "zero dim": _entry_bytes(dims=(0, 3)),
    "with shard offset size crc": _entry_bytes(tail=b"\x18\x02" + _TAIL),
    "big dtype": _entry_bytes(dtype=300, tail=_TAIL),
    "dtype 0": _entry_bytes(dtype=0),
    "dtype 127": _entry_bytes(dtype=127),
    "long shape": _entry_bytes(dims=tuple(range(1, 60)), tail=_TAIL),
    "big dims": _entry_bytes(dims=(2**40, 3)),
    "negative dim": b"\x08\x01\x12\x0d\x12\x0b\x08" + b"\xff" * 9 + b"\x01",
    "huge shape": _entry_bytes(dims=(2**31, 2**31, 2**31)),
    "9-byte offset": _entry_bytes(tail=b"\x20" + b"\x80" * 8 + b"\x01"),
    "10-byte offset": _entry_bytes(tail=b"\x20" + b"\x80" * 9 + b"\x01"),
    "11-byte offset": _entry_bytes(tail=b"\x20" + b"\x80" * 10 + b"\x01"),
    "negative shard": _entry_bytes(tail=b"\x18" + b"\xff" * 9 + b"\x01"),
    "9-byte int32 shard": _entry_bytes(tail=b"\x18" + b"\xff" * 8 + b"\x7f"),
    "non-minimal varint": _entry_bytes(tail=b"\x28\x88\x80\x00"),
    "fields out of order": _entry_bytes(tail=b"\x28\x08\x20\x08"),
    "repeated field": _entry_bytes(tail=b"\x20\x08\x20\x09"),
    "dtype again": _entry_bytes(tail=b"\x08\x03"),
    "shape again": _entry_bytes(tail=b"\x12\x04\x12\x02\x08\x05"),
    "unknown field": _entry_bytes(tail=b"\x40\x01"),
    "unknown length field": _entry_bytes(tail=b"\x4a\x02ab"),
    "crc truncated": _entry_bytes(tail=b"\x35\x01\x02"),
    "varint truncated": _entry_bytes(tail=b"\x20\x80"),
    "tag only": _entry_bytes(tail=b"\x28"),
    "group tag": _entry_bytes(tail=b"\x0b"),
    "invalid wire type": _entry_bytes(tail=b"\x0f"),
    "zero tag": _entry_bytes(tail=b"\x00"),
    "trailing garbage": _entry_bytes(tail=_TAIL + b"\xff"),
    "shape truncated": b"\x08\x01\x12\x06\x12\x02\x08\x02",
    "shape length past end": b"\x08\x01\x12\x7f\x12\x02\x08\x02",
    "short value": b"\x08\x01\x12",
    "empty value": b"",
    "shape only": b"\x12\x00",
    "dtype only": b"\x08\x01",
    "shape first": b"\x12\x04\x12\x02\x08\x02\x08\x01",
    "dim with name": b"\x08\x01\x12\x07\x12\x05\x08\x02\x12\x01x",
    "unknown rank": b"\x08\x01\x12\x02\x18\x01",
    "unknown field in shape": b"\x08\x01\x12\x06\x12\x02\x08\x02\x20\x01",
    "bad dim bytes": b"\x08\x01\x12\x04\x12\x02\x0f\x02",
    "wire type mismatch dtype": b"\x0a\x01\x01\x12\x00",
    "wire type mismatch shape": b"\x08\x01\x10\x02",
    "long shape length": b"\x08\x01\x12\x80\x01" + b"\x12\x00" * 64,
}


@pytest.mark.parametrize("name", sorted(_ODD))
def test_odd_entries(tmp_path, name):
    value = _ODD[name]
    # The odd entry among plain ones sharing its head: the head cache must not leak results.
    entries = {b"a": _entry_bytes(), b"m": value, b"z": _entry_bytes(tail=_TAIL)}
    _assert_agree(_craft(tmp_path, entries))
    _assert_agree(_craft(tmp_path, {b"only": value}))


def test_odd_entries_together(tmp_path):
    good = {}
    for i, (name, value) in enumerate(sorted(_ODD.items())):
        prefix = _craft(tmp_path, {b"x": value})
        if isinstance(_reference(prefix), tuple):
            good[b"k%03d" % i] = value
    assert len(good) > 20
    _assert_agree(_craft(tmp_path, good))


def test_errors_are_typed(tmp_path):
    for name in ("negative dim", "huge shape", "crc truncated", "trailing garbage", "shape truncated"):
        with pytest.raises(DataLossError), BundleReader(_craft(tmp_path, {b"a": _ODD[name]})) as reader:
            reader.list_metadata()


def test_hidden_slice_keys(tmp_path):
    """Keys listed by a partitioned tensor's entry are hidden, others (even slice-like) stay."""
    listed = ((0, 2), (0, -1))
    unlisted = ((2, 2), (0, -1))
    full = tensor_bundle_pb2.BundleEntryProto(dtype=1)
    for d in (4, 3):
        full.shape.dim.add().size = d
    full.slices.append(slice_to_proto(listed))
    # A slice key listed but absent, and a second partitioned tensor listing nothing stored.
    full.slices.append(slice_to_proto(((3, 1), (0, -1))))
    entries = {
        b"w": full,
        encode_slice_key(b"w", listed): _entry_bytes(dims=(2, 3), tail=_TAIL),
        encode_slice_key(b"w", unlisted): _entry_bytes(dims=(2, 3), tail=_TAIL),
        b"plain": _entry_bytes(tail=_TAIL),
    }
    prefix = _craft(tmp_path, entries)
    metadata, debug = _assert_agree(prefix)
    assert [n for n, _, _ in metadata] == [decode_key(encode_slice_key(b"w", unlisted)), "plain", "w"]
    assert metadata[-1] == ("w", 1, (4, 3))
    assert [k for k, _, _ in debug] == sorted(k for k in entries if k != b"w")


def test_random_corruptions_of_entries(tmp_path):
    """Byte flips, truncations and insertions in typical entries: both paths agree."""
    rng = random.Random(1234)
    base = [
        _entry_bytes(tail=_TAIL),
        _entry_bytes(dims=(3, 0, 300), tail=b"\x18\x01" + _TAIL),
        _entry_bytes(dtype=19, dims=(), tail=b"\x28\x02\x35\xd8\xea\x82\xa2"),
    ]
    for _ in range(300):
        value = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(value))
            op = rng.random()
            if op < 0.6:
                value[i] = rng.choice((rng.randrange(256), value[i] ^ 0x80, value[i] ^ 0x01))
            elif op < 0.8:
                del value[i:]
                value += b"\x00" if not value else b""
            else:
                value[i:i] = bytes([rng.randrange(256)])
        _assert_agree(_craft(tmp_path, {b"a": _entry_bytes(), b"b": bytes(value), b"c": base[0]}))


def test_decode_keys_matches_per_key():
    rng = random.Random(7)
    alphabet = [b"a", b"/", b"\n", b"\x00", b"\xff", b"\x80", b"\xc3", b"\xa9", b"\xe2\x82", b"\xac",
                b"\xf0\x9f\x98", b"\x80", "\u00e9".encode(), "\U0001f600".encode(), b"\xed\xa0\x80"]
    for with_newline in (False, True):
        for _ in range(200):
            keys = [
                b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
                for _ in range(rng.randint(0, 8))
            ]
            if not with_newline:
                keys = [k.replace(b"\n", b"") for k in keys]
            assert decode_keys(keys) == [decode_key(k) for k in keys]


def test_large_index_reads_only_the_index(tmp_path):
    """Many blocks, no data file: the fast path needs only the index."""
    from jaxsaver import BundleWriter

    prefix = str(tmp_path / "big")
    with BundleWriter(prefix) as w:
        for i in range(20_000):
            w.add(f"model/block_{i // 100:03d}/layer_{i % 100:02d}/kernel", np.zeros((i % 3, 2), np.float32))
    os.remove(prefix + ".data-00000-of-00001")
    want = _assert_agree(prefix)
    assert len(want[0]) == 20_000


def test_plain_entries_skip_protobuf(tmp_path, monkeypatch):
    """Entries as TensorFlow writes them never reach the per-entry protobuf parse (only a
    partitioned tensor's entry, which lists slices, does)."""
    prefix = str(tmp_path / "ckpt")
    write_ours(prefix, CORPUS["sliced_mixed"] + CORPUS["names_special"])
    parsed = []
    original = BundleReader._parse_entry

    def spy(self, key, value):
        parsed.append(key)
        return original(self, key, value)

    monkeypatch.setattr(BundleReader, "_parse_entry", spy)
    with BundleReader(prefix) as reader:
        names = [n for n, _, _ in reader.list_metadata()]
    assert parsed == [b"x\x00y\xff"]
    assert "before" in names and "x\x00y\udcff" in names

"""Unit tests of the pure _format layer against the vectors in FORMAT.md."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

from jaxsaver import BundleWriter
from jaxsaver._proto import tensor_bundle_pb2
from jaxsaver._format.crc import MASK_DELTA, crc32c, extend, mask, unmask
from jaxsaver._format.slices import (
    SliceError,
    _signed,
    _unsigned,
    covers_all,
    encode_slice_key,
    format_slice_spec,
    intersect,
    parse_slice_spec,
    slice_from_index,
    slice_from_proto,
    slice_to_proto,
)
from jaxsaver._format.snappy import decompress
from jaxsaver._format.table import TableBuilder, TableError, TableReader, _separator, _successor
from jaxsaver._format.tensors import TensorError, data_filename, decode_strings, encode_strings, make_header
from jaxsaver._format.varint import VarintError, decode_varint, encode_varint

# ----------------------------------------------------------------------------- crc


def test_crc32c_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert extend(crc32c(b"1234"), b"56789") == 0xE3069283
    assert crc32c(np.frombuffer(b"123456789", np.uint8)) == 0xE3069283
    assert crc32c(memoryview(b"123456789")) == 0xE3069283


def test_mask_vectors():
    assert mask(0) == MASK_DELTA == 0xA282EAD8
    assert struct.pack("<I", mask(0)).hex(" ") == "d8 ea 82 a2"
    rng = random.Random(0)
    for value in [0, 1, 0xFFFFFFFF, 0x80000000] + [rng.getrandbits(32) for _ in range(200)]:
        assert unmask(mask(value)) == value
        assert mask(value) == (((value >> 15) | (value << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- varint


@pytest.mark.parametrize(
    "value, hexed",
    [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02"), (2**32, "8080808010"),
     (2**64 - 1, "ffffffffffffffffff01")],
)
def test_varint_vectors(value, hexed):
    assert encode_varint(value).hex() == hexed
    assert decode_varint(bytes.fromhex(hexed), 0, len(hexed) // 2) == (value, len(hexed) // 2)


def test_varint_round_trip():
    rng = random.Random(1)
    values = [rng.getrandbits(rng.randint(1, 64)) for _ in range(2000)]
    buf = b"".join(encode_varint(v) for v in values)
    pos = 0
    for v in values:
        got, pos = decode_varint(buf, pos, len(buf))
        assert got == v
    assert pos == len(buf)


def test_varint_errors():
    with pytest.raises(ValueError):
        encode_varint(-1)
    with pytest.raises(VarintError):
        decode_varint(b"", 0, 0)
    with pytest.raises(VarintError):
        decode_varint(b"\x80\x80", 0, 2)
    with pytest.raises(VarintError):
        decode_varint(b"\x80\x01", 0, 1)  # limit cuts it
    with pytest.raises(VarintError):
        decode_varint(b"\xff" * 5 + b"\x01", 0, 6, 5)
    with pytest.raises(VarintError):
        decode_varint(b"\xff" * 11, 0, 11)


# ----------------------------------------------------------------------------- slice keys

_SIGNED = [
    (0, "80"), (1, "81"), (2, "82"), (63, "bf"), (64, "c040"), (100, "c064"), (8191, "dfff"),
    (8192, "e02000"), (10000, "e02710"), (2**20, "f0100000"), (-1, "7f"), (-64, "40"), (-65, "3fbf"),
]


@pytest.mark.parametrize("value, hexed", _SIGNED)
def test_signed_encoding(value, hexed):
    assert _signed(value).hex() == hexed


def test_signed_encoding_preserves_order_and_long_forms():
    values = sorted({0, -1, 1, 2**62, -(2**62), 2**63 - 1, -(2**63)} | {random.Random(2).randint(-(2**63), 2**63 - 1) for _ in range(500)})
    encoded = [_signed(v) for v in values]
    assert encoded == sorted(encoded)
    assert len(_signed(2**63 - 1)) == 10
    assert _signed(2**63 - 1)[:2].hex() == "ffc0"
    assert len(_signed(2**56)) == 9 and _signed(2**56)[:2].hex() == "ff81"


@pytest.mark.parametrize("value, hexed", [(0, "00"), (2, "0102"), (300, "02012c")])
def test_unsigned_encoding(value, hexed):
    assert _unsigned(value).hex() == hexed


def test_slice_key_examples():
    assert encode_slice_key(b"w", ((0, 2), (0, -1))).hex(" ") == "00 77 00 01 01 02 80 82 80 7f"
    assert encode_slice_key(b"a\x00b\xffc/x", ((70, 9930), (0, -1))).hex(" ") == (
        "00 61 00 ff 62 ff 00 63 2f 78 00 01 01 02 c0 46 e0 26 ca 80 7f"
    )
    # TF1-style explicit full extents give another key than "-".
    assert encode_slice_key(b"w", ((0, 2), (0, 6))) != encode_slice_key(b"w", ((0, 2), (0, -1)))


def test_full_entry_with_slices_bytes():
    entry = tensor_bundle_pb2.BundleEntryProto(dtype=1)
    entry.shape.SetInParent()
    for d in (4, 6):
        entry.shape.dim.add().size = d
    for extents in (((0, 2), (0, -1)), ((2, 2), (0, 3)), ((2, 2), (3, 3))):
        entry.slices.append(slice_to_proto(extents))
    assert entry.SerializeToString().hex(" ") == (
        "08 01 12 08 12 02 08 04 12 02 08 06 3a 06 0a 02 10 02 0a 00 3a 0a 0a 04 08 02 10 02 0a 02 "
        "10 03 3a 0c 0a 04 08 02 10 02 0a 04 08 03 10 03"
    )
    assert [slice_from_proto(s) for s in entry.slices] == [
        ((0, 2), (0, -1)), ((2, 2), (0, 3)), ((2, 2), (3, 3))
    ]


def test_zero_dim_shape_proto():
    entry = tensor_bundle_pb2.BundleEntryProto()
    entry.shape.SetInParent()
    for d in (0, 3):
        entry.shape.dim.add().size = d
    assert entry.SerializeToString().hex(" ") == "12 06 12 00 12 02 08 03"


# ----------------------------------------------------------------------------- slice specs


@pytest.mark.parametrize(
    "spec, shape, extents",
    [
        ("4 6 0,2:-", (4, 6), ((0, 2), (0, -1))),
        ("4 6 -:-", (4, 6), ((0, -1), (0, -1))),
        ("4 6 1,2:2,3", (4, 6), ((1, 2), (2, 3))),
        ("10 3,7", (10,), ((3, 7),)),
        ("2 0,2", (2,), ((0, 2),)),
        ("1 2 3 4 5 6 -:-:-:-:-:0,6", (1, 2, 3, 4, 5, 6), ((0, -1),) * 5 + ((0, 6),)),
    ],
)
def test_parse_and_format_slice_spec(spec, shape, extents):
    assert parse_slice_spec(spec) == (shape, extents)
    assert format_slice_spec(shape, extents) == spec


def test_parse_empty_spec():
    assert parse_slice_spec("") == (None, None)


@pytest.mark.parametrize(
    "spec",
    [
        "4  6 0,2:-",  # double space
        "4 6 0,2",  # rank mismatch
        "4 0,2:-",  # rank mismatch
        "4 6 0,5:-",  # out of bounds
        "4 6 3,2:-",  # out of bounds
        "4 6 -1,2:-",  # negative start
        "4 6 0,0:-",  # zero length
        "4 6 0,2,1:-",  # three numbers
        "4 6 a,b:-",
        "-4 6 0,2:-",  # negative dim
        "x 6 0,2:-",
        "0,2:-",  # no shape
        "4",  # no slice
        "4 6 0,2:- ",  # trailing space
        "\u0664 0,2",  # non-ASCII digit
        "4 +0,2",
    ],
)
def test_bad_slice_specs(spec):
    with pytest.raises(SliceError):
        parse_slice_spec(spec)


def test_slice_from_index():
    shape = (4, 6)
    assert slice_from_index(shape, (slice(0, 2),)) == (((0, 2), (0, 6)), ())
    assert slice_from_index(shape, (1, slice(None))) == (((1, 1), (0, 6)), (0,))
    assert slice_from_index(shape, (Ellipsis, -1)) == (((0, 4), (5, 1)), (1,))
    assert slice_from_index(shape, slice(-2, None)) == (((2, 2), (0, 6)), ())
    for bad in [(slice(0, 4, 2),), (4,), (0, 0, 0), (Ellipsis, Ellipsis), ("a",)]:
        with pytest.raises(SliceError):
            slice_from_index(shape, bad)


def test_slice_arithmetic():
    shape = (4, 6)
    assert covers_all(shape, ((0, -1), (0, 6)))
    assert not covers_all(shape, ((0, 3), (0, -1)))
    assert intersect(shape, ((0, 2), (0, -1)), ((1, 3), (2, 2))) == ((1, 1), (2, 2))
    assert intersect(shape, ((0, 2), (0, -1)), ((2, 2), (0, -1))) is None


# ----------------------------------------------------------------------------- whole files

_EXAMPLE_INDEX = bytes.fromhex(
    # data block: header entry, "s", "w", restarts
    "000006" "08011a020801"
    "00011173" "0807120412020801200828073509eb4d15"
    "00010f77" "0801120412020802280835593ce535"
    "0000000001000000"
    "005740565b"  # trailer
    # empty metaindex block + trailer
    "0000000001000000" "00c0f2a1b0"
    # index block: "x" -> (0, 57), restarts, trailer
    "000102780039" "0000000001000000" "0053ee0f5d"
    # footer
    "3e084b0e" + "00" * 36 + "57fb808b247547db"
)
_EXAMPLE_DATA = bytes.fromhex("0000803f00000040" "02" "d8d81073" "6869")


def test_annotated_example_bytes(tmp_path):
    assert len(_EXAMPLE_INDEX) == 142 and len(_EXAMPLE_DATA) == 15
    prefix = str(tmp_path / "ex")
    with BundleWriter(prefix) as writer:
        writer.add("w", np.array([1.0, 2.0], np.float32))
        writer.add("s", np.array([b"hi"], dtype=object))
    with open(prefix + ".index", "rb") as f:
        assert f.read() == _EXAMPLE_INDEX
    with open(prefix + ".data-00000-of-00001", "rb") as f:
        assert f.read() == _EXAMPLE_DATA
    reader = TableReader(_EXAMPLE_INDEX)
    assert [k for k, _ in reader.items()] == [b"", b"s", b"w"]
    assert reader.get(b"") == make_header(1).SerializeToString() == bytes.fromhex("08011a020801")


def test_string_encoding_examples():
    chunks, crc, size = encode_strings(np.array(b"abc", dtype=object))
    assert b"".join(chunks).hex(" ") == "03 63 3f 7f 28 61 62 63" and size == 8
    data = b"".join(chunks)
    value, computed = decode_strings(data, ())
    assert value.shape == () and value[()] == b"abc" and computed == crc

    chunks, crc, size = encode_strings(np.array([], dtype=object))
    assert b"".join(chunks).hex(" ") == "d8 ea 82 a2" and size == 4
    assert crc == 0x640CC1F6

    items = np.array([[b"", b"x" * 200], [b"\x00", "\u00e9"]], dtype=object)
    chunks, crc, size = encode_strings(items)
    data = b"".join(chunks)
    assert size == len(data) == 1 + 2 + 1 + 1 + 4 + 200 + 1 + 2
    value, computed = decode_strings(data, (2, 2))
    assert computed == crc
    assert value.tolist() == [[b"", b"x" * 200], [b"\x00", "\u00e9".encode()]]


def test_decode_strings_errors():
    good = b"".join(encode_strings(np.array([b"ab", b"c"], dtype=object))[0])
    with pytest.raises(TensorError):
        decode_strings(good[:-1], (2,))
    with pytest.raises(TensorError):
        decode_strings(good, (2**40,))
    corrupt = bytearray(good)
    corrupt[2] ^= 1  # the length checksum
    with pytest.raises(TensorError):
        decode_strings(bytes(corrupt), (2,))
    with pytest.raises(TensorError):
        decode_strings(b"\xff\xff\xff\xff", (1,))


def test_data_filename():
    assert data_filename("ckpt/model", 1, 3) == "ckpt/model.data-00001-of-00003"
    assert data_filename("p", 123456, 200000) == "p.data-123456-of-200000"


# ----------------------------------------------------------------------------- snappy


def test_snappy_hand_made_stream():
    # "abc" literal, then a 1-byte-offset copy of 9 bytes at offset 3.
    stream = bytes([12, (3 - 1) << 2]) + b"abc" + bytes([((9 - 4) << 2) | 1, 3])
    assert decompress(stream) == b"abcabcabcabc"
    # 2-byte-offset copy: 20 bytes at offset 2.
    stream = encode_varint(22) + bytes([(2 - 1) << 2]) + b"xy" + bytes([((20 - 1) << 2) | 2, 2, 0])
    assert decompress(stream) == b"xy" * 11
    # A long literal (length in one extra byte).
    payload = bytes(range(100))
    stream = encode_varint(100) + bytes([60 << 2, 99]) + payload
    assert decompress(stream) == payload
    assert decompress(b"\x00") == b""


@pytest.mark.parametrize(
    "stream",
    [
        b"",
        b"\x05\x08abc",  # literal runs short of the stated length
        b"\x03\x10ab",  # literal runs past the end
        b"\x0c\x08abc\x15\x04",  # copy offset beyond output
        b"\x0c\x08abc\x15\x00",  # copy offset 0
        b"\x0c\x08abc\x15",  # copy cut short
        b"\x02\x08abc",  # output longer than stated
        b"\xff\xff\xff\xff\x0f",  # claimed length impossible
        b"\x80\x80\x80\x80\x80\x01",  # overlong length varint
    ],
)
def test_snappy_errors(stream):
    with pytest.raises(ValueError):
        decompress(stream)


def test_table_reads_snappy_block():
    # A block with one entry (key "k", value "v"), compressed as one literal.
    block = b"\x00\x01\x01kv" + b"\x00\x00\x00\x00\x01\x00\x00\x00"
    compressed = encode_varint(len(block)) + bytes([(len(block) - 1) << 2]) + block
    out = bytearray(compressed)
    out += b"\x01" + struct.pack("<I", mask(crc32c(compressed + b"\x01")))
    meta_off = len(out)
    meta = b"\x00\x00\x00\x00\x01\x00\x00\x00"
    out += meta + b"\x00" + struct.pack("<I", mask(crc32c(meta + b"\x00")))
    index_off = len(out)
    handle = encode_varint(0) + encode_varint(len(compressed))
    index = b"\x00\x01" + bytes([len(handle)]) + b"l" + handle + b"\x00\x00\x00\x00\x01\x00\x00\x00"
    out += index + b"\x00" + struct.pack("<I", mask(crc32c(index + b"\x00")))
    footer = encode_varint(meta_off) + encode_varint(8) + encode_varint(index_off) + encode_varint(len(index))
    out += footer + bytes(40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    reader = TableReader(bytes(out))
    assert reader.get(b"k") == b"v"
    assert list(reader.items()) == [(b"k", b"v")]


# ----------------------------------------------------------------------------- table


def test_empty_table_blocks():
    data = TableBuilder().finish()
    # Empty metaindex block and its trailer are pinned bytes.
    assert bytes.fromhex("00000000010000" "0000c0f2a1b0") in data
    assert list(TableReader(data).items()) == []


def test_separator_and_successor():
    assert _successor(b"u8") == b"v"
    assert _successor(b"w") == b"x"
    assert _successor(b"\xff\xff") == b"\xff\xff"
    assert _successor(b"\xffa") == b"\xffb"
    assert _separator(b"abc", b"abe") == b"abd"
    assert _separator(b"abc", b"abd") == b"abc"  # a[i]+1 == b[i]
    assert _separator(b"ab", b"abc") == b"ab"  # prefix
    assert _separator(b"a\xff", b"b\x00") == b"a\xff"  # a[0]+1 == b[0]
    assert _separator(b"b" * 600_000, b"c") == b"b" * 600_000


@pytest.mark.parametrize("block_size", [64, 1024, 262144])
def test_table_random_keys(block_size):
    rng = random.Random(block_size)
    keys = set()
    while len(keys) < 3000:
        n = rng.randint(0, 40)
        alphabet = b"\x00\x01ab\xfe\xff" if rng.random() < 0.5 else bytes(range(256))
        keys.add(bytes(rng.choice(alphabet) for _ in range(n)))
    keys = sorted(keys)
    values = {k: bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 30))) for k in keys}
    builder = TableBuilder(block_size=block_size)
    for k in keys:
        builder.add(k, values[k])
    data = builder.finish()
    assert data[-8:] == bytes.fromhex("57fb808b247547db")
    reader = TableReader(data)
    assert list(reader.items()) == [(k, values[k]) for k in keys]
    for k in rng.sample(keys, 500):
        assert reader.get(k) == values[k]
    for _ in range(500):
        probe = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 41)))
        assert reader.get(probe) == values.get(probe)
    assert reader.get(keys[-1] + b"\x00") is None


def test_table_huge_entry_gets_own_block():
    builder = TableBuilder()
    builder.add(b"a", b"1")
    builder.add(b"b" * 600_000, b"2")
    builder.add(b"c", b"3")
    data = builder.finish()
    reader = TableReader(data)
    assert len(reader._handles) == 3
    assert reader._index_keys[1] == b"b" * 600_000
    assert reader.get(b"b" * 600_000) == b"2" and reader.get(b"c") == b"3"


def test_table_builder_rejects_unsorted():
    builder = TableBuilder()
    builder.add(b"b", b"")
    with pytest.raises(TableError):
        builder.add(b"a", b"")
    with pytest.raises(TableError):
        builder.add(b"b", b"")


def test_table_reader_rejects_garbage():
    for data in [b"", b"x" * 47, b"\x00" * 48, b"\x00" * 40 + bytes.fromhex("57fb808b247547db")]:
        with pytest.raises(TableError):
            TableReader(data)

"""Bad input gets a typed jaxsaver error naming the file and/or key: never a crash, a hang, a
silent wrong value or an allocation sized by a corrupt index."""

from __future__ import annotations

import os
import struct
import time

import numpy as np
import pytest

from bundle_helpers import assert_bit_equal, write_ours
from jaxsaver import (
    BundleReader,
    BundleWriter,
    CheckpointNotFoundError,
    DataLossError,
    InvalidArgumentError,
    JaxsaverError,
    NotFoundError,
    UnimplementedError,
)
from jaxsaver._proto import tensor_bundle_pb2, types_pb2
from jaxsaver._format.crc import crc32c, extend, mask
from jaxsaver._format.slices import encode_slice_key, slice_to_proto
from jaxsaver._format.table import TableBuilder
from jaxsaver._format.tensors import make_header
from jaxsaver._format.varint import decode_varint, encode_varint

_FULL = np.arange(8, dtype=np.int32).reshape(4, 2)
SMALL = [
    ("f", np.array([1.5, -2.0, np.nan], np.float32), ""),
    ("s", np.array([b"hello", b"", b"\xff\x00"], dtype=object), ""),
    ("w", _FULL[0:1], "4 2 0,1:-"),
    ("w", _FULL[1:4], "4 2 1,3:-"),
]
SMALL_EXPECTED = {
    "f": SMALL[0][1],
    "s": SMALL[1][1],
    "w": _FULL,
}


@pytest.fixture
def small(tmp_path):
    prefix = str(tmp_path / "small" / "ckpt")
    os.makedirs(os.path.dirname(prefix))
    write_ours(prefix, SMALL)
    return prefix


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _entry(dtype, shape, *, offset=0, size=0, crc=None, shard_id=0, slices=(), data=None):
    proto = tensor_bundle_pb2.BundleEntryProto(dtype=dtype, shard_id=shard_id, offset=offset, size=size)
    proto.shape.SetInParent()
    for d in shape:
        proto.shape.dim.add().size = d
    if data is not None:
        proto.crc32c = mask(crc32c(data))
    elif crc is not None:
        proto.crc32c = crc
    for extents in slices:
        proto.slices.append(slice_to_proto(extents))
    return proto


def _craft(prefix, entries, data=b"", *, header=None, num_shards=1):
    """A bundle with hand-made entries: ``entries`` maps key bytes to a proto or raw value."""
    builder = TableBuilder()
    if header is None:
        header = make_header(num_shards).SerializeToString()
    builder.add(b"", header)
    for key in sorted(entries):
        value = entries[key]
        builder.add(key, value if isinstance(value, bytes) else value.SerializeToString())
    _write(prefix + ".index", builder.finish())
    if data is not None:
        _write(f"{prefix}.data-00000-of-{num_shards:05d}", data)
    return prefix


def _read_all(prefix):
    with BundleReader(prefix) as reader:
        return {name: reader.get_tensor(name) for name in SMALL_EXPECTED}


def _assert_original_or_error(prefix, what):
    try:
        values = _read_all(prefix)
    except JaxsaverError:
        return "error"
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"{what}: {type(err).__name__}: {err}")
    for name, want in SMALL_EXPECTED.items():
        assert_bit_equal(values[name], want, f"{what}: silent wrong value for {name}")
    return "ok"


# ----------------------------------------------------------------------------- data corruption


def test_data_bit_flip_every_byte(small):
    data_path = small + ".data-00000-of-00001"
    original = _read(data_path)
    with BundleReader(small) as reader:
        ranges = {}
        for key in reader.raw_keys():
            entry = reader.info(key).entry
            if entry.size:
                owner = "w" if key.startswith("\x00") else key
                ranges[owner] = ranges.get(owner, []) + [(entry.offset, entry.offset + entry.size)]
    assert sum(e - s for rs in ranges.values() for s, e in rs) == len(original)
    for i in range(len(original)):
        owner = next(k for k, rs in ranges.items() if any(s <= i < e for s, e in rs))
        corrupt = bytearray(original)
        corrupt[i] ^= 0x01
        _write(data_path, bytes(corrupt))
        with BundleReader(small) as reader:
            for name, want in SMALL_EXPECTED.items():
                if name == owner:
                    with pytest.raises(DataLossError, match="checksum does not match") as info:
                        reader.get_tensor(name)
                    assert repr(name) in str(info.value) and data_path in str(info.value)
                else:
                    assert_bit_equal(reader.get_tensor(name), want, name)
            problems = reader.verify()
            assert len(problems) == 1 and "checksum does not match" in problems[0][1]


def test_flipped_index_names_the_file(small):
    path = small + ".index"
    original = _read(path)
    corrupt = bytearray(original)
    corrupt[12] ^= 0x40  # inside the first data block
    _write(path, bytes(corrupt))
    with pytest.raises(DataLossError, match="checksum") as info:
        _read_all(small)
    assert path in str(info.value)


@pytest.mark.parametrize("keep", [0, 7, 47, -1, -9])
def test_truncated_index_names_the_file(small, keep):
    path = small + ".index"
    original = _read(path)
    _write(path, original[:keep])
    with pytest.raises(DataLossError) as info:
        BundleReader(small)
    assert path in str(info.value)


def test_missing_data_file(small):
    os.unlink(small + ".data-00000-of-00001")
    with BundleReader(small) as reader:
        assert reader.shape("f") == (3,)
        with pytest.raises(CheckpointNotFoundError, match="data-00000-of-00001"):
            reader.get_tensor("f")


def test_truncated_data_file(small):
    path = small + ".data-00000-of-00001"
    _write(path, _read(path)[:-3])
    with BundleReader(small) as reader:
        assert_bit_equal(reader.get_tensor("f"), SMALL_EXPECTED["f"])
        with pytest.raises(DataLossError, match="truncated") as info:
            reader.get_tensor("w")
        assert path in str(info.value)


def test_missing_index(tmp_path):
    with pytest.raises(CheckpointNotFoundError):
        BundleReader(str(tmp_path / "nothing"))


def test_index_suffix_in_prefix(small):
    with pytest.raises(CheckpointNotFoundError, match="without '.index'"):
        BundleReader(small + ".index")


# ----------------------------------------------------------------------------- hand-made entries

_F4 = np.arange(4, dtype=np.float32).tobytes()


@pytest.mark.parametrize(
    "entry, error, match",
    [
        (_entry(types_pb2.DT_FLOAT, [4], size=12, data=_F4), DataLossError, "Invalid size"),
        (_entry(types_pb2.DT_FLOAT, [4], size=20, data=_F4), DataLossError, "truncated"),
        (_entry(types_pb2.DT_FLOAT, [2], offset=12, size=8, data=_F4[12:]), DataLossError, "truncated"),
        (_entry(types_pb2.DT_FLOAT, [3], size=16, data=_F4), DataLossError, "Invalid size"),
        (_entry(types_pb2.DT_FLOAT, [-4], size=16, data=_F4), DataLossError, "negative"),
        (_entry(types_pb2.DT_FLOAT, [4], size=16, crc=0), DataLossError, "checksum does not match"),
        (_entry(types_pb2.DT_FLOAT, [4], size=16, shard_id=1, data=_F4), DataLossError, "shard"),
        (_entry(types_pb2.DT_FLOAT, [4], size=16, shard_id=-1, data=_F4), DataLossError, "shard"),
        (_entry(types_pb2.DT_FLOAT, [4], offset=-4, size=16, data=_F4), DataLossError, "negative"),
        (_entry(types_pb2.DT_FLOAT, [2**40], size=16, data=_F4), DataLossError, "Invalid size"),
        (_entry(types_pb2.DT_FLOAT, [2**40, 2**40], size=16, data=_F4), DataLossError, "large"),
        (_entry(types_pb2.DT_FLOAT, [0, 2**62], data=b""), DataLossError, "large"),
        (_entry(types_pb2.DT_VARIANT, [1], size=16, data=_F4), UnimplementedError, "DT_VARIANT"),
        (_entry(types_pb2.DT_RESOURCE, [1], size=16, data=_F4), UnimplementedError, "DT_RESOURCE"),
        (_entry(99, [4], size=16, data=_F4), DataLossError, "dtype"),
        (b"\x08\x01\x12\x04\x12\x02\x08", DataLossError, "corrupt entry"),
        (_entry(types_pb2.DT_STRING, [2**40], size=16, data=_F4), DataLossError, "strings"),
    ],
    ids=lambda v: None,
)
def test_bad_entry(tmp_path, entry, error, match):
    prefix = _craft(str(tmp_path / "c"), {b"t": entry}, _F4)
    start = time.monotonic()
    with pytest.raises(error, match=match) as info:
        with BundleReader(prefix) as reader:
            reader.get_tensor("t")
    assert time.monotonic() - start < 5
    assert "'t'" in str(info.value) or "t (" in str(info.value) or prefix in str(info.value)


def test_string_length_past_end(tmp_path):
    # Length varint claims 100 bytes but the entry holds 7.
    data = encode_varint(100) + b"\x00" * 4 + b"ab"
    prefix = _craft(str(tmp_path / "c"), {b"s": _entry(types_pb2.DT_STRING, [1], size=len(data), data=data)}, data)
    with BundleReader(prefix) as reader, pytest.raises(DataLossError, match="'s'"):
        reader.get_tensor("s")
    # An unterminated varint.
    data = b"\xff\xff\xff"
    prefix = _craft(str(tmp_path / "d"), {b"s": _entry(types_pb2.DT_STRING, [1], size=3, data=data)}, data)
    with BundleReader(prefix) as reader, pytest.raises(DataLossError, match="'s'"):
        reader.get_tensor("s")


def test_huge_sliced_tensor_does_not_allocate(tmp_path):
    full = ((0, 2**40),)
    key = b"big"
    entries = {
        key: _entry(types_pb2.DT_FLOAT, [2**40], slices=[full]),
        encode_slice_key(key, full): _entry(types_pb2.DT_FLOAT, [2**40], size=16, data=_F4),
    }
    prefix = _craft(str(tmp_path / "c"), entries, _F4)
    start = time.monotonic()
    with BundleReader(prefix) as reader:
        assert reader.shape("big") == (2**40,)
        with pytest.raises(DataLossError, match="Invalid size"):
            reader.get_tensor("big")
        with pytest.raises(DataLossError, match="Invalid size"):
            reader.get_slice("big", (slice(0, 2**39),))
    assert time.monotonic() - start < 5


def test_sliced_entry_problems(tmp_path):
    key = b"w"
    a, b = ((0, 2), (0, -1)), ((1, 3), (0, -1))
    data = np.zeros(8, np.float32).tobytes()
    overlapping = {
        key: _entry(types_pb2.DT_FLOAT, [4, 2], slices=[a, b]),
        encode_slice_key(key, a): _entry(types_pb2.DT_FLOAT, [2, 2], size=16, data=data[:16]),
        encode_slice_key(key, b): _entry(types_pb2.DT_FLOAT, [3, 2], size=24, data=data[:24]),
    }
    prefix = _craft(str(tmp_path / "o"), overlapping, data)
    with BundleReader(prefix) as reader, pytest.raises(DataLossError, match="Overlapping"):
        reader.get_tensor("w")
    missing = {key: _entry(types_pb2.DT_FLOAT, [4, 2], slices=[((0, 4), (0, -1))])}
    prefix = _craft(str(tmp_path / "m"), missing, data)
    with BundleReader(prefix) as reader, pytest.raises(DataLossError, match="no entry"):
        reader.get_tensor("w")
    out_of_bounds = {key: _entry(types_pb2.DT_FLOAT, [4, 2], slices=[((3, 4), (0, -1))])}
    prefix = _craft(str(tmp_path / "b"), out_of_bounds, data)
    with BundleReader(prefix) as reader, pytest.raises(DataLossError, match="exceeds"):
        reader.get_tensor("w")


@pytest.mark.parametrize("num_shards", [2**31 - 1, 7])
def test_header_with_many_shards(tmp_path, num_shards):
    prefix = _craft(str(tmp_path / "c"), {b"t": _entry(types_pb2.DT_FLOAT, [4], size=16, data=_F4)}, _F4,
                    num_shards=1)
    header = make_header(num_shards).SerializeToString()
    _craft(prefix, {b"t": _entry(types_pb2.DT_FLOAT, [4], size=16, data=_F4)}, None, header=header)
    with BundleReader(prefix) as reader:
        with pytest.raises(CheckpointNotFoundError, match=f"of-{num_shards:05d}"):
            reader.get_tensor("t")


@pytest.mark.parametrize(
    "header, match",
    [
        (tensor_bundle_pb2.BundleHeaderProto(num_shards=-1), "num_shards"),
        (tensor_bundle_pb2.BundleHeaderProto(num_shards=0), "num_shards"),
        (tensor_bundle_pb2.BundleHeaderProto(num_shards=1, endianness=5), "endianness"),
        (b"\xff\xff", "header"),
    ],
    ids=["negative", "zero", "endianness", "garbage"],
)
def test_bad_header(tmp_path, header, match):
    raw = header if isinstance(header, bytes) else header.SerializeToString()
    prefix = _craft(str(tmp_path / "c"), {}, b"", header=raw)
    with pytest.raises(DataLossError, match=match) as info:
        BundleReader(prefix)
    assert prefix + ".index" in str(info.value)


def test_newer_version_is_unimplemented(tmp_path):
    header = make_header(1)
    header.version.min_consumer = 5
    prefix = _craft(str(tmp_path / "c"), {}, b"", header=header.SerializeToString())
    with pytest.raises(UnimplementedError):
        BundleReader(prefix)


def _raw_table(block: bytes) -> bytes:
    """A table whose single data block has the given contents (with a valid trailer CRC)."""
    out = bytearray(block)
    out += b"\x00" + struct.pack("<I", mask(crc32c(block + b"\x00")))
    meta_off = len(out)
    meta = b"\x00\x00\x00\x00\x01\x00\x00\x00"
    out += meta + b"\x00" + struct.pack("<I", mask(crc32c(meta + b"\x00")))
    index_off = len(out)
    handle = encode_varint(0) + encode_varint(len(block))
    index = b"\x00\x01" + bytes([len(handle)]) + b"\xff" + handle + b"\x00\x00\x00\x00\x01\x00\x00\x00"
    out += index + b"\x00" + struct.pack("<I", mask(crc32c(index + b"\x00")))
    footer = encode_varint(meta_off) + encode_varint(8) + encode_varint(index_off) + encode_varint(len(index))
    out += footer + bytes(40 - len(footer)) + struct.pack("<Q", 0xDB4775248B80FB57)
    return bytes(out)


@pytest.mark.parametrize(
    "block",
    [
        b"\x00\x00\x7f" + b"\x08\x01" + b"\x00\x00\x00\x00\x01\x00\x00\x00",  # value_len past the end
        b"\x00\x00" + b"\x00\x00\x00\x00\x01\x00\x00\x00",  # entry cut inside its varints
        b"\x05\x01\x00a" + b"\x00\x00\x00\x00\x01\x00\x00\x00",  # shares more than the previous key
        b"\x00\x00\x00" + b"\xff\xff\xff\x7f",  # absurd restart count
        b"\x00\x00\x00",  # shorter than the restart count
        b"\x00\x80\x80\x80\x80\x80\x01\x00" + b"\x00\x00\x00\x00\x01\x00\x00\x00",  # overlong varint
    ],
)
def test_bad_table_block(tmp_path, block):
    prefix = str(tmp_path / "c")
    _write(prefix + ".index", _raw_table(block))
    with pytest.raises(DataLossError, match="c.index"):
        with BundleReader(prefix) as reader:
            reader.keys()


def test_table_block_sanity(tmp_path):
    """_raw_table itself is valid: a good block reads."""
    header = make_header(1).SerializeToString()
    block = b"\x00\x00" + bytes([len(header)]) + header + b"\x00\x00\x00\x00\x01\x00\x00\x00"
    prefix = str(tmp_path / "c")
    _write(prefix + ".index", _raw_table(block))
    with BundleReader(prefix) as reader:
        assert reader.keys() == []


# ----------------------------------------------------------------------------- the index sweep


def test_index_corruption_sweep(small):
    path = small + ".index"
    original = _read(path)
    harmless = set()
    try:
        for i in range(len(original)):
            for bits in (0xFF, 0x01):
                corrupt = bytearray(original)
                corrupt[i] ^= bits
                _write(path, bytes(corrupt))
                if _assert_original_or_error(small, f"byte {i} ^ {bits:#x}") == "ok":
                    harmless.add(i)
        for n in range(len(original)):
            _write(path, original[:n])
            assert _assert_original_or_error(small, f"truncated to {n}") == "error"
    finally:
        _write(path, original)
    assert _assert_original_or_error(small, "restored") == "ok"
    # Only bytes the reader never uses may be harmless: the metaindex block and its trailer,
    # the footer's metaindex handle and padding.
    footer = len(original) - 48
    meta_offset, pos = decode_varint(original, footer, len(original))
    meta_size, index_handle_start = decode_varint(original, pos, len(original))
    _, pos = decode_varint(original, index_handle_start, len(original))
    _, index_handle_end = decode_varint(original, pos, len(original))
    unused = set(range(meta_offset, meta_offset + meta_size + 5))
    unused |= set(range(footer, footer + 40)) - set(range(index_handle_start, index_handle_end))
    assert harmless <= unused, sorted(harmless - unused)


# ----------------------------------------------------------------------------- writer errors


def test_duplicate_name_leaves_no_files(tmp_path):
    prefix = str(tmp_path / "ckpt")
    with pytest.raises(InvalidArgumentError, match="dup/name"):
        with BundleWriter(prefix) as writer:
            writer.add("a", np.float32(1))
            writer.add("dup/name", np.float32(1))
            writer.add("dup/name", np.float32(2))
    assert os.listdir(tmp_path) == []


def test_duplicate_name_without_context_manager(tmp_path):
    writer = BundleWriter(str(tmp_path / "ckpt"))
    writer.add("x", np.arange(3))
    with pytest.raises(InvalidArgumentError, match="'x'"):
        writer.add_slice("x", (4,), "0,2", np.arange(2))
    assert os.listdir(tmp_path) == []
    with pytest.raises(InvalidArgumentError):
        writer.finish()
    assert os.listdir(tmp_path) == []


def test_duplicate_slice_leaves_no_files(tmp_path):
    with pytest.raises(InvalidArgumentError, match="'w'"):
        with BundleWriter(str(tmp_path / "ckpt")) as writer:
            writer.add_slice("w", (4,), "0,2", np.arange(2.0))
            writer.add_slice("w", (4,), "4 0,2", np.arange(2.0))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["", b""])
def test_empty_name(tmp_path, name):
    with pytest.raises(InvalidArgumentError, match="empty"):
        with BundleWriter(str(tmp_path / "ckpt")) as writer:
            writer.add(name, np.float32(1))
    assert os.listdir(tmp_path) == []
    with pytest.raises(InvalidArgumentError, match="empty"):
        with BundleWriter(str(tmp_path / "ckpt")) as writer:
            writer.add_slice(name, (4,), "0,2", np.arange(2.0))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "args",
    [
        ((4,), "0,5", np.arange(5.0)),  # out of bounds
        ((4,), "0,2", np.arange(3.0)),  # value shape differs from slice shape
        ((4,), "5 0,2", np.arange(2.0)),  # spec for another shape
        ((4, 2), "4  2 0,2:-", np.zeros((2, 2))),  # double space
        ((4, 2), "0,2", np.zeros((2, 2))),  # rank mismatch
    ],
)
def test_bad_slice_spec(tmp_path, args):
    with pytest.raises(InvalidArgumentError):
        with BundleWriter(str(tmp_path / "ckpt")) as writer:
            writer.add_slice("w", *args)
    assert os.listdir(tmp_path) == []


def test_unsupported_dtype(tmp_path):
    with pytest.raises(UnimplementedError, match="'t'"):
        with BundleWriter(str(tmp_path / "ckpt")) as writer:
            writer.add("t", np.array(["2020-01-01"], dtype="datetime64[D]"))
    with pytest.raises(UnimplementedError, match="'t'"):
        with BundleWriter(str(tmp_path / "ckpt")) as writer:
            writer.add_slice("t", (4,), "0,2", np.array(["2020-01-01"] * 2, dtype="datetime64[D]"))
    with pytest.raises(InvalidArgumentError, match="'t'"):
        with BundleWriter(str(tmp_path / "ckpt")) as writer:
            writer.add("t", np.array([1, "x"], dtype=object))
    assert os.listdir(tmp_path) == []


def test_reader_lookup_errors(small):
    with BundleReader(small) as reader:
        with pytest.raises(NotFoundError, match="nope"):
            reader.get_tensor("nope")
        with pytest.raises(NotFoundError):
            reader.get_tensor("")
        assert not reader.has_tensor("")
        with pytest.raises(InvalidArgumentError):
            reader.get_slice("f", "4 0,2")
        with pytest.raises(InvalidArgumentError):
            reader.get_slice("f", (slice(0, 3, 2),))
        with pytest.raises(InvalidArgumentError):
            reader.get_slice("f", (5,))
        with pytest.raises(InvalidArgumentError):
            reader.read_into("f", np.empty(3, np.float64))
        # "" is the whole tensor, as in TF's shape_and_slices.
        assert_bit_equal(reader.get_slice("f", ""), SMALL_EXPECTED["f"])
        assert_bit_equal(reader.get_slice("w", ""), _FULL)


# ----------------------------------------------------------------------------- valid hand-made bundles


def test_big_endian_bundle(tmp_path):
    """A BIG-endian bundle (FORMAT.md §4.6) reads as native values."""
    f32 = np.array([1.5, -2.0, 3.25], np.float32)
    c64 = np.array([1 + 2j, -3j], np.complex64)
    i16 = np.array([[1, -2], [300, -32768]], np.int16)
    strings = [b"ab", b"", b"xyz"]
    lengths = b"".join(encode_varint(len(s)) for s in strings)
    crc = 0
    for s in strings:
        crc = extend(crc, struct.pack(">I", len(s)))
    checksum = struct.pack(">I", mask(crc))
    string_data = lengths + checksum + b"".join(strings)
    crc = extend(extend(crc, checksum), b"".join(strings))
    chunks = [f32.astype(">f4").tobytes(), c64.astype(">c8").tobytes(), i16.astype(">i2").tobytes(), string_data]
    data = b"".join(chunks)
    offsets = np.cumsum([0] + [len(c) for c in chunks])
    entries = {
        b"f": _entry(types_pb2.DT_FLOAT, [3], offset=int(offsets[0]), size=len(chunks[0]), data=chunks[0]),
        b"c": _entry(types_pb2.DT_COMPLEX64, [2], offset=int(offsets[1]), size=len(chunks[1]), data=chunks[1]),
        b"i": _entry(types_pb2.DT_INT16, [2, 2], offset=int(offsets[2]), size=len(chunks[2]), data=chunks[2]),
        b"s": _entry(types_pb2.DT_STRING, [3], offset=int(offsets[3]), size=len(chunks[3]), crc=mask(crc)),
    }
    header = make_header(1)
    header.endianness = tensor_bundle_pb2.BundleHeaderProto.BIG
    prefix = _craft(str(tmp_path / "big"), entries, data, header=header.SerializeToString())
    with BundleReader(prefix) as reader:
        assert_bit_equal(reader.get_tensor("f"), f32)
        assert_bit_equal(reader.get_tensor("c"), c64)
        assert_bit_equal(reader.get_tensor("i"), i16)
        assert_bit_equal(reader.get_tensor("s"), np.array(strings, dtype=object))
        assert_bit_equal(reader.get_slice("i", (slice(None), 1)), i16[:, 1])
        out = np.empty((2, 2), np.int16)
        assert_bit_equal(reader.read_into("i", out), i16)
        assert reader.verify() == []


def test_writer_normalises_inputs(tmp_path):
    """Non-native byte order, non-contiguous arrays and str values are stored as TF would."""
    prefix = str(tmp_path / "ckpt")
    fortran = np.arange(6.0).reshape(2, 3).T
    with BundleWriter(prefix) as writer:
        writer.add("be", np.arange(3, dtype=">f4"))
        writer.add("f", fortran)
        writer.add("s", "caf\u00e9")
        writer.add("u", np.array(["ab", "c"]))
        writer.add_slice("e", (4,), "0,2", np.arange(2, dtype=">i8"))
    with BundleReader(prefix) as reader:
        assert_bit_equal(reader.get_tensor("be"), np.arange(3, dtype=np.float32))
        assert_bit_equal(reader.get_tensor("f"), np.ascontiguousarray(fortran))
        assert_bit_equal(reader.get_tensor("s"), np.array("caf\u00e9".encode(), dtype=object))
        assert_bit_equal(reader.get_tensor("u"), np.array([b"ab", b"c"], dtype=object))
        assert_bit_equal(reader.get_slice("e", "0,2"), np.arange(2, dtype=np.int64))

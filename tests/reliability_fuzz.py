"""Fuzzes BundleReader with hypothesis inside a memory limit: ``python reliability_fuzz.py DIR N``.

Generated ``.index`` (and data) bytes: random bytes, mutations of a valid index, and valid
tables of hostile entries (huge shapes, offsets, shard ids, slice extents). For each, the
reader must return data or raise a jaxsaver error; the process's address space is capped at
its size at start plus ``256 MiB + 4096 x`` the largest file (``RLIMIT_AS``), so an allocation
sized by a claim in the file, not by the file, fails the run. Prints one JSON line of figures;
exits 1 (printing the example) on any other exception.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback

MAX_FILE = 4096
HEADROOM = 256 << 20


def _valid_index(directory: str) -> bytes:
    import numpy as np

    from jaxsaver import BundleWriter

    prefix = os.path.join(directory, "valid")
    with BundleWriter(prefix) as w:
        w.add("a", np.arange(6, dtype=np.float32).reshape(2, 3))
        w.add("s", np.array([b"x", b"yz"], dtype=object))
        w.add_slice("t", (4, 2), ((0, 2), (0, 2)), np.ones((2, 2), np.int64))
        w.add_slice("t", (4, 2), ((2, 2), (0, 2)), np.zeros((2, 2), np.int64))
    with open(prefix + ".index", "rb") as f:
        return f.read()


def main(directory: str, examples: int, seed: int = 0) -> int:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from jaxsaver._proto import tensor_bundle_pb2, tensor_slice_pb2
    from jaxsaver._bundle.reader import BundleReader
    from jaxsaver._errors import JaxsaverError
    from jaxsaver._format.table import TableBuilder

    valid = _valid_index(directory)
    with open("/proc/self/statm") as f:
        vm_pages = int(f.read().split()[0])
    limit = vm_pages * resource.getpagesize() + HEADROOM + 4096 * MAX_FILE
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    big = st.integers(min_value=-1, max_value=(1 << 63) - 1) | st.integers(0, 64)

    @st.composite
    def hostile_table(draw):
        header = tensor_bundle_pb2.BundleHeaderProto(num_shards=draw(st.integers(0, 4)), endianness=draw(st.integers(0, 2)))
        header.version.producer = 1
        builder = TableBuilder()
        builder.add(b"", header.SerializeToString())
        keys = sorted(set(draw(st.lists(st.binary(min_size=1, max_size=12), max_size=6))))
        for key in keys:
            entry = tensor_bundle_pb2.BundleEntryProto(
                dtype=draw(st.integers(0, 30)), shard_id=draw(st.integers(-1, 4)),
                offset=draw(big), size=draw(big), crc32c=draw(st.integers(0, (1 << 32) - 1)),
            )
            for d in draw(st.lists(big, max_size=4)):
                entry.shape.dim.add().size = d
            for _ in range(draw(st.integers(0, 3))):
                piece = tensor_slice_pb2.TensorSliceProto()
                for _ in range(len(entry.shape.dim)):
                    extent = piece.extent.add()
                    extent.start = draw(st.integers(0, 1 << 40) | st.integers(0, 4))
                    if draw(st.booleans()):
                        extent.length = draw(st.integers(0, 1 << 40) | st.integers(0, 4))
                entry.slices.append(piece)
            builder.add(key, entry.SerializeToString())
        return builder.finish()

    @st.composite
    def mutated(draw):
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.integers(0, 2))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == 0 and data:
                data[at] ^= draw(st.integers(1, 255))
            elif kind == 1:
                del data[at:]
            else:
                data[at:at] = draw(st.binary(min_size=1, max_size=8))
        return bytes(data[:MAX_FILE])

    indexes = st.binary(max_size=MAX_FILE) | mutated() | hostile_table()
    figures = {"examples": 0, "typed_errors": 0, "read_ok": 0, "max_seconds": 0.0}
    prefix = os.path.join(directory, "fuzz")

    @hypothesis_seed(seed)  # fixed: a run is reproducible; other seeds draw other examples
    @settings(max_examples=examples, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(index=indexes, data=st.binary(max_size=512))
    def check(index: bytes, data: bytes) -> None:
        with open(prefix + ".index", "wb") as f:
            f.write(index)
        for k in range(3):
            with open(f"{prefix}.data-{k:05d}-of-00001" if k == 0 else f"{prefix}.data-{k - 1:05d}-of-0000{k + 1}", "wb") as f:
                f.write(data)
        start = time.perf_counter()
        try:
            with BundleReader(prefix) as reader:
                for name in reader.keys()[:16]:
                    reader.get_tensor(name)
                    shape = reader.shape(name)
                    if shape and shape[0] > 1:
                        reader.get_slice(name, (slice(1, None),))
                reader.verify()
            figures["read_ok"] += 1
        except JaxsaverError:
            figures["typed_errors"] += 1
        except BaseException:
            print("UNTYPED", index.hex(), data.hex(), traceback.format_exc(), flush=True)
            raise
        finally:
            figures["examples"] += 1
            if figures["examples"] % 5000 == 0:
                print(json.dumps(figures), file=sys.stderr, flush=True)
            figures["max_seconds"] = max(figures["max_seconds"], time.perf_counter() - start)

    try:
        check()
    except BaseException:  # an untyped error was printed above; anything else is said here
        print("FUZZ RUN FAILED", json.dumps(figures), traceback.format_exc(), file=sys.stderr, flush=True)
        return 1
    figures["limit_mib"] = limit >> 20
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0))

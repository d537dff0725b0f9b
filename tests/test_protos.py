"""The committed *_pb2 modules are exactly what protos/ generates."""

import importlib.util
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools not installed")
def test_generated_modules_match_protos(tmp_path):
    # protoc runs in its own process: grpc_tools' native code and TensorFlow's protobuf runtime
    # crash when loaded into one interpreter.
    subprocess.run([sys.executable, str(ROOT / "tools" / "gen_protos.py"), str(tmp_path)], check=True, timeout=120)
    generated = sorted((tmp_path / "jaxsaver" / "_proto").glob("*_pb2.py"))
    assert generated, "protoc produced nothing"
    committed = sorted((ROOT / "jaxsaver" / "_proto").glob("*_pb2.py"))
    assert [p.name for p in generated] == [p.name for p in committed]
    for new in generated:
        old = ROOT / "jaxsaver" / "_proto" / new.name
        assert new.read_text() == old.read_text(), f"{old} differs from protos/: run tools/gen_protos.py"


def test_every_proto_has_a_module():
    protos = {p.stem for p in (ROOT / "protos" / "jaxsaver" / "_proto").glob("*.proto")}
    modules = {p.name[: -len("_pb2.py")] for p in (ROOT / "jaxsaver" / "_proto").glob("*_pb2.py")}
    assert protos == modules

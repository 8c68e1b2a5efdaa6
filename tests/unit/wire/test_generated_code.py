"""The committed protobuf/gRPC modules are exactly what the proto generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedops.wire.generate import REPO_ROOT, generate


def test_regenerating_the_proto_gives_no_diff(tmp_path: Path):
    pytest.importorskip("grpc_tools")
    written = generate(tmp_path)
    assert {p.name for p in written} == {"fedops_pb2.py", "fedops_pb2.pyi", "fedops_pb2_grpc.py"}
    for fresh in written:
        committed = REPO_ROOT / "fedops" / "v1" / fresh.name
        assert committed.read_text() == fresh.read_text(), (
            f"{committed} is stale: run `python -m fedops.wire.generate` and commit the result"
        )

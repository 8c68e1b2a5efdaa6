"""Regenerate the protobuf/gRPC modules from ``proto/fedops/v1/fedops.proto``.

Run ``python -m fedops.wire.generate`` after editing the proto. The output lands
in ``fedops/v1/`` (the proto's package path), and is committed: a test
regenerates into a temporary folder and fails on any difference, so the
committed code can never drift from the protocol definition.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILE = "fedops/v1/fedops.proto"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) and return the files it wrote."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(PROTO_ROOT / PROTO_FILE),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO_ROOT / PROTO_FILE}")
    return sorted((out_dir / "fedops" / "v1").glob("fedops_pb2*"))


def main() -> int:
    written = generate(REPO_ROOT)
    for path in written:
        print(f"wrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

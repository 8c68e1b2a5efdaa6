"""``fedops audit digest``: a model file's model digest, the value the audit logs record.

Here, not beside ``audit verify`` in :mod:`fedops.reporting`, because it reads a run's
safetensors model files (:mod:`fedops.runtime.checkpoint_file`), which the reports do not.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedops.core.model_hash import UnknownDigest, shortened
from fedops.core.params import digest, digest_matches
from fedops.runtime.checkpoint_file import (
    STATE_PREFIX,
    Checkpoint,
    decode_checkpoint,
    safetensors_header,
)
from fedops.wire.codec import shown


def audit_digest_command(path: Path, expect: str | None) -> int:
    """``fedops audit digest``: print a model file's model digest, the value the audit logs
    record for it (``model_sent``, ``round_committed``, a site's ``model_received``); with
    ``expect``, 0 only when the file's model is the one that digest names (a run directory
    from before fedops.v1.4 records bare SHA-256 digests, checked in that algorithm).

    BLAKE3 over the tensors' names, dtypes and shapes and then their bytes is not what
    ``b3sum`` prints for the file, so an auditor gets the value from here.
    """
    try:
        data = Path(path).read_bytes()
        checkpoint = decode_checkpoint(data)
        extra = sorted(_tensor_names(data) - set(checkpoint.params) - _state_names(checkpoint))
    except OSError as exc:
        print(f"FAILED: cannot read {path}: {exc.strerror}", file=sys.stderr)
        return 1
    except Exception as exc:  # struct, JSON, safetensors' own errors: not a model file
        print(
            f"FAILED: {path} is not a model file fedops reads ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return 1
    if extra:  # the digest would cover the model and say nothing of these
        print(
            f"FAILED: {path} holds tensors outside its model and strategy state: "
            f"{shown(', '.join(extra))}",
            file=sys.stderr,
        )
        return 1
    params = checkpoint.params
    got = digest(params)
    print(got)
    if expect is None:
        return 0
    try:
        same = digest_matches(params, expect)
    except UnknownDigest as exc:
        print(f"FAILED: --expect: {exc}", file=sys.stderr)
        return 1
    if not same:
        print(f"FAILED: {path} is not the model {shortened(expect)} names", file=sys.stderr)
        return 1
    print(f"OK: {path} is the model {shortened(expect)} names", file=sys.stderr)
    return 0


def _tensor_names(data: bytes) -> set[str]:
    """Every tensor a safetensors file's header lists (decode_checkpoint keeps only the
    model's, in its recorded order, and the strategy state)."""
    return {name for name in safetensors_header(data) if name != "__metadata__"}


def _state_names(checkpoint: Checkpoint) -> set[str]:
    return {STATE_PREFIX + name for name in checkpoint.strategy_state}

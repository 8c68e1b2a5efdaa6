"""``fedops audit digest``: a model file's model digest, the value the audit logs record.

Here, not beside ``audit verify`` in :mod:`fedops.reporting`, because it reads a run's
safetensors model files (:mod:`fedops.runtime.checkpoint_file`), which the reports do not.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedops.core.model_hash import UnknownDigest, shortened
from fedops.core.params import digest, digest_matches
from fedops.runtime.audit.model_files import ModelFileError, read_model


def audit_digest_command(path: Path, expect: str | None) -> int:
    """``fedops audit digest``: print a model file's model digest, the value the audit logs
    record for it (``model_sent``, ``round_committed``, a site's ``model_received``); with
    ``expect``, 0 only when the file's model is the one that digest names (a run directory
    from before fedops.v1.4 records bare SHA-256 digests, checked in that algorithm).

    BLAKE3 over the tensors' names, dtypes and shapes and then their bytes is not what
    ``b3sum`` prints for the file, so an auditor gets the value from here.
    """
    try:
        params = read_model(path)
    except ModelFileError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
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

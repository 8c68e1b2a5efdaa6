"""``fedops audit digest``: an auditor's way from a model file to the digest the audit logs
record (BLAKE3 over the specs header and the bytes, which ``b3sum`` of the file is not).

Threat model: the run directory's operator may hand the auditor a model file other than the
one trained. The command must say which model a file is, and with ``--expect`` accept only
the model the logged digest names: never another one, never on a digest it cannot read,
and never with a traceback for a file that is not a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from fedops.cli import main
from fedops.core.params import digest_header, le_bytes, specs_of
from fedops.runtime.checkpoint_file import write_safetensors
from fedops.runtime.store import RunStore


def _params(value: float) -> dict[str, np.ndarray]:
    return {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3) + value,
        "b": np.array([value, 2.0]),
    }


@pytest.fixture
def run(tmp_path: Path) -> tuple[RunStore, Path]:
    store = RunStore(tmp_path / "run")
    store.save_round(0, _params(0.0), {})
    store.save_round(1, _params(1.0), {})
    yield store, store.export_model(1)
    store.close()


def _digest(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["audit", "digest", *argv])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_an_exported_model_and_its_checkpoint_print_the_digest_the_run_recorded(run, capsys):
    store, model = run
    recorded = store.model_digest(1)
    assert recorded is not None and recorded.startswith("blake3:")
    assert _digest(capsys, str(model)) == (0, recorded, "")
    checkpoint = store.dir / "checkpoints" / "round-00001.safetensors"
    assert _digest(capsys, str(checkpoint))[:2] == (0, recorded)


def test_expect_accepts_only_the_model_the_digest_names(run, capsys):
    store, model = run
    code, _, err = _digest(capsys, str(model), "--expect", str(store.model_digest(1)))
    assert code == 0 and err.startswith("OK:")
    code, _, err = _digest(capsys, str(model), "--expect", str(store.model_digest(0)))
    assert code == 1 and err.startswith("FAILED:") and "is not the model blake3:" in err


def test_an_older_runs_sha256_digest_is_checked_in_sha256(run, capsys):
    _, model = run
    h = hashlib.sha256(digest_header(specs_of(_params(1.0))))
    for arr in _params(1.0).values():
        h.update(le_bytes(arr))
    assert _digest(capsys, str(model), "--expect", h.hexdigest())[0] == 0
    other = hashlib.sha256(b"another model").hexdigest()
    assert _digest(capsys, str(model), "--expect", other)[0] == 1


@pytest.mark.parametrize("expect", ["", "sha256:" + "0" * 64, "md5:abc", "blake3:" + "Z" * 64])
def test_a_digest_it_cannot_read_fails_in_one_line(run, capsys, expect):
    _, model = run
    code, _, err = _digest(capsys, str(model), "--expect", expect)
    assert code == 1 and err.startswith("FAILED: --expect:") and "\n" not in err


@pytest.mark.parametrize("content", [None, b"", b"not a model", b"\x02" + b"\x00" * 7 + b"{}x"])
def test_a_missing_or_broken_file_fails_in_one_line(tmp_path, capsys, content):
    path = tmp_path / "model.safetensors"
    if content is not None:
        path.write_bytes(content)
    code, out, err = _digest(capsys, str(path))
    assert code == 1 and out == "" and err.startswith("FAILED:") and "\n" not in err
    assert "Traceback" not in err


def test_a_file_holding_tensors_beside_the_model_is_refused(run, capsys):
    """The digest covers the tensors the file's recorded order names; a tensor slipped in
    beside them (which a loader might still read) makes the file fail, even with the right
    --expect."""
    store, model = run
    params = _params(1.0)
    extra = model.with_name("padded.safetensors")
    write_safetensors(extra, {**params, "hidden": np.ones(2)}, {"order": json.dumps(list(params))})
    code, out, err = _digest(capsys, str(extra), "--expect", str(store.model_digest(1)))
    assert code == 1 and out == ""
    assert err == f"FAILED: {extra} holds tensors outside its model and strategy state: 'hidden'"

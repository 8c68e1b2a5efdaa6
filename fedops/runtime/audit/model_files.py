"""Do a run directory's model files hold the models its signed audit log committed?

``fedops audit export`` verifies the logs and cross-checks their digests, but the files
an operator hands on, ``model.safetensors`` and the round checkpoints, are in no log: a
swapped file would pass every check of the logs. Here each file's model digest is
recomputed and compared with what the coordinator's log recorded:

* ``checkpoints/round-N.safetensors``: round N's ``round_committed`` ``model_digest``
  (round 0: the ``initial_model`` entry), and the file's SHA-256 the entry's
  ``checkpoint_sha256`` where it records one (it covers the strategy state too);
* ``model.safetensors``: the model of the log's last committed round when the run
  finished after it, and the newest ``run_finished`` must name that same model (a run
  directory whose store was edited could otherwise have the coordinator sign another).
  A run that has not finished since its last commit (it crashed, or still runs) keeps
  the file of its newest finish: it must be the model that ``run_finished`` named (with
  none, the last committed round's). A file holding an earlier round's model fails,
  named as that round's: whoever deploys it gets a stale model.

A digest is recomputed in the algorithm it names (:func:`fedops.core.params.digest_matches`),
so a run resumed across ``fedops.v1.4`` (bare SHA-256 before, BLAKE3 after) checks. A file
no entry vouches for (a checkpoint of a round the log never committed, or of a name the run
store does not write) is listed as ``unlogged``, not failed: a crash between a checkpoint
and its log entry leaves one, and the coordinator resumes only from rounds the log commits.
A file holding tensors beside its model and strategy state fails: the digest would say
nothing of them. Files are read only if regular and as long as their header says
(:func:`fedops.runtime.checkpoint_file.read_safetensors_file`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedops.core.model_hash import UnknownDigest, hash_named, shortened
from fedops.core.params import Params, digest, digest_matches
from fedops.runtime.audit.commitments import COMMIT_EVENT, INITIAL_EVENT, Commitment, Commitments
from fedops.runtime.checkpoint_file import (
    STATE_PREFIX,
    decode_checkpoint,
    read_safetensors_file,
    safetensors_header,
)
from fedops.wire.codec import shown

MODEL_FILE = "model.safetensors"
CHECKPOINT_NAME = re.compile(r"round-(\d{5,9})\.safetensors")


class ModelFileError(Exception):
    """A file that is not a model fedops can vouch for; the message says which and why."""


def read_model(path: Path) -> Params:
    """The model a run's model file or checkpoint holds (strategy state aside).

    Raises:
        ModelFileError: unreadable, not a safetensors model, or holding other tensors.
    """
    return _read(path)[0]


def _read(path: Path) -> tuple[Params, bytes]:
    """:func:`read_model`, and the file's bytes as read."""
    try:
        data = read_safetensors_file(Path(path))
        checkpoint = decode_checkpoint(data)
        names = {n for n in safetensors_header(data) if n != "__metadata__"}
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from exc
    except Exception as exc:  # struct, JSON, safetensors' own errors: not a model file
        raise ModelFileError(
            f"{path} is not a model file fedops reads ({type(exc).__name__}: "
            f"{shown(str(exc), 200)})"
        ) from exc
    state = {STATE_PREFIX + name for name in checkpoint.strategy_state}
    extra = sorted(names - set(checkpoint.params) - state)
    if extra:
        raise ModelFileError(
            f"{path} holds tensors outside its model and strategy state: {shown(', '.join(extra))}"
        )
    return checkpoint.params, data


@dataclass(slots=True)
class ModelFileCheck:
    """One row per file checked, and the failures as compliance mismatches."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)

    def add(self, file: str, status: str, message: str, **row: Any) -> None:
        self.rows.append({"file": file, "status": status, "message": message, **row})
        if status not in ("ok", "unlogged", "missing"):
            self.mismatches.append({"kind": "model_file", "file": file, "message": message})


@dataclass(slots=True)
class _Log:
    """The coordinator log's commitments, and how its run ended."""

    commitments: Commitments = field(default_factory=Commitments)
    finished: str | None = None  # the newest run_finished's model digest ("" if none named)
    finished_after_last_commit: bool = False
    #: the coordinator's own word that its store named a final model the log never committed
    unvouched: str = ""

    @property
    def committed(self) -> dict[int, Commitment]:
        return self.commitments.rounds


def check_model_files(run_dir: Path, entries: Sequence[Mapping[str, Any]]) -> ModelFileCheck:
    """Each model file of ``run_dir`` against the coordinator's log ``entries`` (its verified
    prefix, as ``{"event", "payload"}`` dicts)."""
    log = _recorded(entries)
    check = ModelFileCheck()
    folder = Path(run_dir) / "checkpoints"
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        name = f"checkpoints/{path.name}"
        match = CHECKPOINT_NAME.fullmatch(path.name)
        server_round = int(match.group(1)) if match else None
        if server_round is None or path.name != f"round-{server_round:05d}.safetensors":
            check.add(name, "unlogged", f"{name}: not a checkpoint name the run store writes")
        elif server_round not in log.committed:
            check.add(name, "unlogged", f"{name}: the log commits no round {server_round}")
        else:
            _check_one(check, path, name, log.committed[server_round], server_round, log)
    _check_final(check, Path(run_dir) / MODEL_FILE, log)
    return check


def _check_final(check: ModelFileCheck, model: Path, log: _Log) -> None:
    """``model.safetensors`` against the last committed round, and the log's own word on the
    final model (``run_finished``) against that round's commitment."""
    if not log.committed:
        if model.exists():
            check.add(MODEL_FILE, "unlogged", f"{MODEL_FILE}: the log commits no round")
        return
    last = max(log.committed)
    final = log.committed[last]
    if log.finished_after_last_commit and log.unvouched:
        message = (
            f"run_finished: the coordinator did not vouch for its final model: {log.unvouched}"
        )
        check.add("audit.jsonl", "mismatch", message)
    if log.finished_after_last_commit and log.finished and log.finished != final.model_digest:
        check.add(
            "audit.jsonl",
            "mismatch",
            f"run_finished names the model {shortened(log.finished)}, not round {last}'s "
            f"committed model {shortened(str(final.model_digest))}",
        )
    if not model.exists():
        if log.finished_after_last_commit:
            check.add(MODEL_FILE, "missing", f"no {MODEL_FILE}: the final model is not here")
        return
    # finished since the last commit: that round's model. Else (a later resume crashed or
    # still runs) the file is still the newest finish's, never another round's.
    named = Commitment(model_digest=log.finished, checkpoint_sha256=None) if log.finished else None
    expected = final if log.finished_after_last_commit or named is None else named
    _check_one(check, model, MODEL_FILE, expected, None, log)


def _recorded(entries: Sequence[Mapping[str, Any]]) -> _Log:
    """What the log committed, as a resume reads it (:class:`Commitments`: the newest entry
    of each round, round 0's from ``initial_model``, none past a fallback's round until
    committed again), and how the run ended."""
    log = _Log()
    for entry in entries:
        event, payload = entry.get("event"), entry.get("payload")
        if not isinstance(payload, Mapping) or not isinstance(event, str):
            continue
        if event == "run_finished":
            named = payload.get("model_digest")
            log.finished = named if isinstance(named, str) else ""
            log.finished_after_last_commit = True
            why = payload.get("model_unvouched")
            log.unvouched = shown(why, 200) if isinstance(why, str) else ""
        elif event in (COMMIT_EVENT, INITIAL_EVENT):
            log.finished_after_last_commit = False
        log.commitments.observe(event, payload)
    return log


def _check_one(
    check: ModelFileCheck,
    path: Path,
    name: str,
    expected: Commitment,
    server_round: int | None,
    log: _Log,
) -> None:
    """``path`` against ``expected``; a file that is not the expected model is named as the
    committed round whose model it is, if any."""
    row = {"round": server_round, "expected": expected.model_digest}
    try:
        params, data = _read(path)
        same = digest_matches(params, str(expected.model_digest))
    except ModelFileError as exc:  # its message names the file
        check.add(name, "unreadable", str(exc), **row)
        return
    except UnknownDigest as exc:
        check.add(name, "unreadable", f"{name}: the log's digest: {exc}", **row)
        return
    got = digest(params)
    holds = _round_holding(params, log.committed) if not same else server_round
    committed_file = expected.checkpoint_sha256 if server_round is not None else ""
    if same and committed_file and hashlib.sha256(data).hexdigest() != committed_file:
        message = (
            f"{name}: holds round {server_round}'s model, but is not the file the log "
            "committed (its strategy state or metadata differs)"
        )
        check.add(name, "mismatch", message, digest=got, **row)
        return
    if same:
        check.add(name, "ok", f"{name}: the model {shortened(got)} committed", digest=got, **row)
        return
    held = f"round {holds}'s model" if holds is not None else "a model no round committed"
    want = f"round {server_round}'s" if server_round is not None else "the final"
    logged = shortened(str(expected.model_digest))
    message = f"{name} holds {held} ({shortened(got)}), not {want} ({logged})"
    check.add(name, "mismatch", message, digest=got, holds_round=holds, **row)


def _round_holding(params: Params, committed: Mapping[int, Commitment]) -> int | None:
    """The first committed round whose model ``params`` are: hashed once per algorithm the
    log's digests name, whatever the number of rounds."""
    mine: dict[str, str] = {}  # algorithm -> params' digest in it
    for server_round, commitment in sorted(committed.items()):
        try:
            algorithm = hash_named(str(commitment.model_digest))
        except UnknownDigest:
            continue
        if algorithm not in mine:
            mine[algorithm] = digest(params, algorithm)
        if mine[algorithm] == commitment.model_digest:
            return server_round
    return None

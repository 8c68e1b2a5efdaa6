"""The agent's side of secure aggregation (:mod:`fedops.client.secure_participant`), its pure parts.

Under test: :class:`ContributionRecord` (one masked input per round, rounds
only forward, kept across restarts in ``secagg_rounds.json``, and a file that
does not read back as such a record refuses every round rather than forget);
:func:`secure_identity` without a kit (no flags: no signing and no trust;
``--identity-key`` signs, ``--trusted-keys`` verifies); and the refusals
:class:`SecureParticipant` makes before any work (no session for the round, a
setup for another run or round, a setup for a round already contributed to).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedops.client.secure_participant import ContributionRecord, SecureParticipant, secure_identity
from fedops.core.secagg.messages import Setup, round_context
from fedops.core.secagg.primitives import ProtocolError
from fedops.core.training import TrainConfig
from fedops.crypto import Crypto, Identity, TrustedKeys, verify_ed25519
from fedops.tasks import load_task
from fedops.tasks.site import Site
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import secagg as secagg_codec

# -- the record of contributed rounds -----------------------------------------------------------


def test_rounds_only_go_forward_per_run_in_memory() -> None:
    record = ContributionRecord(None)
    assert record.path is None
    record.check_round("run-A", 1)
    record.remember("run-A", 3)
    for r in (1, 3):
        with pytest.raises(ProtocolError) as info:
            record.check_round("run-A", r)
        assert str(info.value) == (
            f"round {r}: this site already dealt its secrets in round 3 of this run; "
            "a round has one session and rounds only go forward (replay refused)"
        )
    record.check_round("run-A", 4)
    record.check_round("run-B", 1)  # another run starts from scratch


def test_remember_refuses_a_replayed_round_and_keeps_the_higher_one() -> None:
    record = ContributionRecord(None)
    record.remember("run-A", 5)
    with pytest.raises(ProtocolError, match="replay refused"):
        record.remember("run-A", 4)
    with pytest.raises(ProtocolError, match="round 5 of this run"):
        record.check_round("run-A", 5)


def test_round_zero_is_never_a_contribution_round() -> None:
    with pytest.raises(ProtocolError, match=r"round 0: .* round 0 of this run"):
        ContributionRecord(None).check_round("run-A", 0)


def test_the_record_is_written_to_the_run_dir_and_read_back_after_a_restart(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "site"
    record = ContributionRecord(run_dir)
    assert record.path == run_dir / "secagg_rounds.json"
    assert not record.path.exists()  # nothing written before a contribution
    record.remember("run-A", 2)
    record.remember("run-B", 7)
    assert json.loads(record.path.read_text()) == {"run-A": 2, "run-B": 7}
    assert not record.path.with_suffix(".tmp").exists()
    restarted = ContributionRecord(run_dir)
    with pytest.raises(ProtocolError, match="round 2 of this run"):
        restarted.check_round("run-A", 2)
    restarted.check_round("run-A", 3)
    with pytest.raises(ProtocolError, match="round 7 of this run"):
        restarted.check_round("run-B", 6)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        '{"run-A": 0}',
        '{"run-A": -1}',
        '{"run-A": 2.0}',
        '{"run-A": true}',
        '{"run-A": "2"}',
        '{"run-A": null}',
    ],
)
def test_a_record_that_does_not_read_back_refuses_every_round(tmp_path: Path, content: str) -> None:
    (tmp_path / "secagg_rounds.json").write_text(content)
    record = ContributionRecord(tmp_path)
    for run, r in (("run-A", 100), ("run-B", 1)):
        with pytest.raises(ProtocolError) as info:
            record.check_round(run, r)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / 'secagg_rounds.json'} is not a record")
        assert message.endswith(
            "refusing secure aggregation rather than forget which rounds this site sent"
        )
    with pytest.raises(ProtocolError):
        record.remember("run-A", 100)
    assert (tmp_path / "secagg_rounds.json").read_text() == content  # never overwritten


def test_an_empty_record_object_is_a_valid_record(tmp_path: Path) -> None:
    (tmp_path / "secagg_rounds.json").write_text("{}")
    ContributionRecord(tmp_path).check_round("run-A", 1)


# -- identities without a kit -------------------------------------------------------------------


def test_without_flags_or_kit_the_site_neither_signs_nor_verifies() -> None:
    assert secure_identity(None, None, "site-0") == {"identity": "site-0"}


def test_identity_key_signs_and_trusted_keys_verify(tmp_path: Path) -> None:
    identity = Identity.generate()
    identity.save(tmp_path / "site-0.key")
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "site-0.pub").write_bytes(identity.public_pem())
    got = secure_identity(tmp_path / "site-0.key", trusted, "site-0")
    assert set(got) == {"identity", "sign", "verify"}
    assert got["identity"] == "site-0"
    assert isinstance(got["verify"], TrustedKeys)
    message = b"keys of round 3"
    signature = got["sign"](message)
    assert verify_ed25519(identity.public_pem(), message, signature)
    assert not verify_ed25519(Identity.generate().public_pem(), message, signature)


# -- refusals before any work -------------------------------------------------------------------


@pytest.fixture(scope="module")
def site() -> Site:
    return Site(load_task("digits"), site=0, num_sites=3, train_config=TrainConfig(epochs=1))


def _secagg_task(request: object, run_id: str = "run-A", round_: int = 2) -> pb.Task:
    task = pb.Task(kind=pb.TASK_KIND_SECAGG, run_id=run_id, round=round_, task_id="s")
    task.secagg.CopyFrom(secagg_codec.request_to_proto(request))  # type: ignore[arg-type]
    return task


def _setup(context: bytes) -> Setup:
    return Setup(context=context, index=1, cohort=("a", "b", "c"), degree=2, threshold=2)


def _unfetched() -> dict:
    raise AssertionError("nothing may be fetched before the request is checked")


def test_a_stage_without_a_setup_for_its_round_is_refused(site: Site) -> None:
    participant = SecureParticipant(site, Crypto())
    request = _secagg_task(_setup(round_context("run-A", 2)))
    request.secagg.ClearField("setup")
    request.secagg.unmask.SetInParent()
    with pytest.raises(ProtocolError, match="no secure-aggregation session for round 2"):
        participant.answer(request, _unfetched)


def test_a_setup_naming_another_run_or_round_is_refused(site: Site) -> None:
    participant = SecureParticipant(site, Crypto())
    for context in (round_context("run-B", 2), round_context("run-A", 1), b"run-A:2:x"):
        with pytest.raises(ProtocolError, match="is not this task's run and round 'run-A:2'"):
            participant.answer(_secagg_task(_setup(context)), _unfetched)


def test_a_setup_for_a_round_already_contributed_to_is_refused(site: Site, tmp_path: Path) -> None:
    ContributionRecord(tmp_path).remember("run-A", 2)
    participant = SecureParticipant(site, Crypto(), run_dir=tmp_path)
    with pytest.raises(ProtocolError, match="replay refused"):
        participant.answer(_secagg_task(_setup(round_context("run-A", 2))), _unfetched)


def test_a_setup_opens_the_rounds_session_and_an_older_round_is_refused(site: Site) -> None:
    participant = SecureParticipant(site, Crypto())
    reply, payload, n, metrics = participant.answer(
        _secagg_task(_setup(round_context("run-A", 2))), _unfetched
    )
    assert reply.WhichOneof("stage") == "keys"
    assert (payload, n, metrics) == ({}, 0, {})
    with pytest.raises(ProtocolError, match="setup for round 1 after round 2"):
        participant.answer(_secagg_task(_setup(round_context("run-A", 1)), round_=1), _unfetched)

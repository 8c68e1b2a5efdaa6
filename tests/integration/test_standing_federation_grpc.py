"""``fedops serve`` over real gRPC on loopback, played against by hostile callers.

Threat model: anyone who can reach the federation (without a kit: loopback) may ask which
run is open; only the serve root's owner (no kit) or a certified admin (kit) may change the
queue; a site may only register for the run it accepted; a run that fails never ends the
federation. Each test deviates from the protocol the way such a caller would.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml

from fedops.cli.run_spec import parse_run_spec
from fedops.consortium.kit import load_kit
from fedops.consortium.kits import init_consortium
from fedops.consortium.tls import channel_credentials
from fedops.coordinator.standing import Federation, ServeSettings
from fedops.runtime.audit.log_file import LOG_NAME
from fedops.runtime.run_queue import FINAL, RunQueue
from fedops.tasks.loader import source_digest
from fedops.v1 import fedops_pb2 as pb
from fedops.v1 import fedops_pb2_grpc as pb_grpc
from fedops.wire import PROTOCOL_VERSION

pytestmark = pytest.mark.slow  # real gRPC servers: the slow lane

FAILING_RUN = "task: digits\nrounds: 1\nmin_clients: 2\njoin_timeout: 1\nmonitoring: none\n"


@contextlib.contextmanager
def _federation(
    root: Path, kit: Path | None = None, allowed: tuple[str, ...] = ()
) -> Iterator[Federation]:
    def parse(spec: str, run_dir: Path, address: str):  # as `fedops serve` parses runs
        return parse_run_spec(spec, run_dir=run_dir, address=address, kit=kit)

    settings = ServeSettings(
        root=root, address="127.0.0.1:0", kit=kit, poll_s=0.1, allowed_tasks=allowed
    )
    fed = Federation(settings, parse)
    thread = threading.Thread(target=fed.serve, daemon=True)
    thread.start()
    try:
        yield fed
    finally:
        fed.close()
        thread.join(timeout=60)
        assert not thread.is_alive()


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Federation]:
    with _federation(tmp_path / "fed") as fed:
        yield fed


def _wait(predicate, what: str, timeout: float = 60.0):
    done = threading.Event()
    for _ in range(int(timeout / 0.1)):
        value = predicate()
        if value:
            return value
        done.wait(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _register(channel: grpc.Channel, run_id: str) -> pb.RegisterResponse:
    request = pb.RegisterRequest(protocol_version=PROTOCOL_VERSION, site_name="s", run_id=run_id)
    return pb_grpc.CoordinatorStub(channel).Register(request, timeout=10)


def test_between_runs_sites_are_told_to_wait_and_strangers_cannot_queue(plain: Federation):
    with grpc.insecure_channel(plain.address) as channel:
        offer = pb_grpc.FederationStub(channel).Offer(pb.OfferRequest(), timeout=10)
        assert not offer.open and "no run is open" in offer.message
        with pytest.raises(grpc.RpcError) as caught:
            _register(channel, "")
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # agents retry this
        assert "no run is open" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            pb_grpc.FederationStub(channel).Submit(pb.RunSubmit(config_yaml="task: digits"))
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "--root" in caught.value.details()
    assert RunQueue(plain.settings.root).runs() == []  # nothing was queued


def test_a_site_registers_only_for_its_run_and_a_failed_run_leaves_the_federation_up(
    plain: Federation,
):
    queue = RunQueue(plain.settings.root)
    queue.submit(FAILING_RUN, task="digits", by="root")
    with grpc.insecure_channel(plain.address) as channel:
        stub = pb_grpc.FederationStub(channel)
        offer = _wait(lambda: (o := stub.Offer(pb.OfferRequest(), timeout=10)).open and o, "open")
        assert (offer.task, offer.train.epochs, offer.rounds) == ("digits", 5, 1)
        with pytest.raises(grpc.RpcError) as caught:
            _register(channel, "another-run")  # a site pinned to a run it accepted elsewhere
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _register(channel, offer.run_id).run_id == offer.run_id
        # one site of min_clients 2 joined: the run fails at its join timeout ...
        failed = _wait(lambda: (r := queue.get(1)).state == "failed" and r, "the run to fail")
        assert "TimeoutError" in failed.message or "within" in failed.message
        # ... and the federation goes on serving
        assert not stub.Offer(pb.OfferRequest(), timeout=10).open
    queue.submit(FAILING_RUN, task="digits", by="root")
    _wait(lambda: queue.get(2).state == "failed", "the next run to open and end")
    closed = [e for e in _entries(plain.settings.root) if e["event"] == "run_closed"]
    assert [(e["payload"]["id"], e["payload"]["state"]) for e in closed] == [
        ("run-0001", "failed"),
        ("run-0002", "failed"),
    ]


def _entries(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / LOG_NAME).read_text().splitlines()]


@pytest.fixture
def consortium(tmp_path: Path) -> Path:
    spec = {
        "name": "fed",
        "coordinator": {"name": "hub", "address": "127.0.0.1:8443"},
        "sites": [{"name": "bank-a"}],
        "admins": [{"name": "alice"}],
        "observers": [{"name": "auditor"}],
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    init_consortium(tmp_path / "c.yaml", tmp_path / "out")
    return tmp_path / "out" / "kits"


def _stub(fed: Federation, kit_dir: Path) -> tuple[grpc.Channel, pb_grpc.FederationStub]:
    channel = grpc.secure_channel(fed.address, channel_credentials(load_kit(kit_dir)))
    return channel, pb_grpc.FederationStub(channel)


def test_only_a_certified_admin_changes_the_queue_and_each_change_is_signed(
    tmp_path: Path, consortium: Path
):
    with _federation(tmp_path / "fed", kit=consortium / "hub") as fed:
        site_channel, site = _stub(fed, consortium / "bank-a")
        observer_channel, observer = _stub(fed, consortium / "auditor")
        admin_channel, admin = _stub(fed, consortium / "alice")
        with site_channel, observer_channel, admin_channel:
            assert not site.Offer(pb.OfferRequest(), timeout=10).open
            for who, call in (
                ("'bank-a' has role 'site'", lambda: site.List(pb.AdminRequest(), timeout=10)),
                (
                    "'auditor' has role 'observer'",
                    lambda: observer.Submit(pb.RunSubmit(config_yaml=FAILING_RUN), timeout=10),
                ),
                (
                    "'bank-a' has role 'site'",
                    lambda: site.Stop(pb.RunStopRequest(id="run-0001"), timeout=10),
                ),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
                assert who in caught.value.details()
            with pytest.raises(grpc.RpcError) as caught:  # refused by key, nothing queued
                admin.Submit(pb.RunSubmit(config_yaml="task: digits\nepochs: x\n"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "epochs: invalid int value" in caught.value.details()
            assert observer.List(pb.AdminRequest(), timeout=10).runs == []
            queued = admin.Submit(pb.RunSubmit(config_yaml=FAILING_RUN, reason="q1"), timeout=10)
            assert [(r.id, r.submitted_by) for r in queued.runs] == [("run-0001", "alice")]
            stopped = admin.Stop(pb.RunStopRequest(id="run-0001", reason="enough"), timeout=10)
            assert "run-0001" in stopped.message
            final = _wait(
                lambda: (
                    (r := observer.List(pb.AdminRequest(), timeout=10).runs[0]).state
                    in ("cancelled", "stopped")
                    and r
                ),
                "the stop to land",
            )
            assert "alice: enough" in final.message
    events = [(e["event"], e["payload"].get("by")) for e in _entries(tmp_path / "fed")]
    assert ("run_submitted", "alice") in events and ("run_stop_requested", "alice") in events


TASK = """\
import torch


def build_model():
    return torch.nn.Linear(64, 10)


def load_data(site, num_sites):
    x = torch.zeros(8, 64)
    y = torch.zeros(8, dtype=torch.long)
    return (x, y), (x, y)
"""


def _run(task: Path) -> str:
    return f"task: {task}\nrounds: 1\nmin_clients: 2\njoin_timeout: 1\nmonitoring: none\n"


def test_a_run_whose_task_fails_as_it_opens_leaves_nothing_open(tmp_path: Path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def build_model():\n    raise RuntimeError('boom')\n\n\ndef load_data(s, n):\n    pass\n"
    )
    with _federation(tmp_path / "fed") as fed:
        queue = RunQueue(fed.settings.root)
        queue.submit(_run(bad), task=str(bad), by="root")
        failed = _wait(lambda: (r := queue.get(1)).state == "failed" and r, "the run to fail")
        assert "boom" in failed.message
        with grpc.insecure_channel(fed.address) as channel:  # no offer, no registration
            assert not pb_grpc.FederationStub(channel).Offer(pb.OfferRequest(), timeout=10).open
            with pytest.raises(grpc.RpcError) as caught:
                _register(channel, "")
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_run_starts_only_on_the_code_it_was_submitted_with_and_allowed(tmp_path: Path):
    task = tmp_path / "task.py"
    task.write_text(TASK)
    digest = source_digest(str(task))
    with _federation(tmp_path / "fed", allowed=(digest,)) as fed:
        queue = RunQueue(fed.settings.root)
        # the file changed between submission and start (or another cwd resolved it)
        queue.submit(_run(task), task=str(task), by="root", task_digest="0" * 64)
        changed = _wait(lambda: (r := queue.get(1)).state == "failed" and r, "a refusal")
        assert "its code changed since the run was submitted" in changed.message
        other = tmp_path / "other.py"
        other.write_text(TASK + "\n# another task\n")
        queue.submit(_run(other), task=str(other), by="root")
        refused = _wait(lambda: (r := queue.get(2)).state == "failed" and r, "a refusal")
        assert "does not run (fedops serve --allowed-task)" in refused.message
        assert not (fed.settings.root / "runs" / "run-0002" / "state.sqlite").exists()


def test_an_admin_stop_names_its_run_and_reaches_the_queue(tmp_path: Path, consortium: Path):
    waiting = FAILING_RUN.replace("join_timeout: 1", "join_timeout: 4")
    with _federation(tmp_path / "fed", kit=consortium / "hub") as fed:
        admin_channel, admin = _stub(fed, consortium / "alice")
        with admin_channel:
            admin.Submit(pb.RunSubmit(config_yaml=waiting), timeout=10)
            offer = _wait(
                lambda: (o := admin.Offer(pb.OfferRequest(), timeout=10)).open and o, "open"
            )
            call = admin_channel.unary_unary(
                "/fedops.v1.Admin/Stop",
                request_serializer=pb.AdminRequest.SerializeToString,
                response_deserializer=pb.RunStatus.FromString,
            )
            with pytest.raises(grpc.RpcError) as caught:  # meant for a run no longer open
                call(pb.AdminRequest(reason="x", run_id="an-earlier-run"), timeout=10)
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            call(pb.AdminRequest(reason="wrong data", run_id=offer.run_id), timeout=10)
            queue = RunQueue(fed.settings.root)
            asked = _wait(lambda: queue.get(1).stop_requested, "the stop in the queue")
            assert "alice: wrong data" in asked  # a killed serve process will not resume it
            ended = _wait(lambda: (r := queue.get(1)).state in FINAL and r, "the run to end")
            assert ended.state == "stopped"

"""A hostile enrolled site against a real coordinator on 127.0.0.1 (red team F2).

The site registers 2**40 examples (the accepted maximum) and answers round 1 with
every weight at float32's maximum: each value is finite and each check passes, yet
the aggregate overflows. The coordinator must abort that round (the model unchanged
and finite, the reason recorded), go on to round 2, and keep a log that verifies.
"""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from fedops.client.calls import Session, fetch_model, push_result
from fedops.coordinator.grpc_server import build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.core.params import digest
from fedops.core.strategies import FedAvg
from fedops.reporting.audit.compliance import verify_log_file
from fedops.runtime.driver import DriverConfig, RoundDriver
from fedops.runtime.records import RecordSettings, RunRecords
from fedops.v1 import fedops_pb2 as pb
from fedops.v1 import fedops_pb2_grpc as pb_grpc
from fedops.wire import PROTOCOL_VERSION

pytestmark = pytest.mark.slow  # a real gRPC server: the slow lane

BIG = float(np.finfo(np.float32).max)
HUGE = 1 << 40
INITIAL = {"w": np.zeros(4, dtype=np.float32), "b": np.ones(2, dtype=np.float32)}


def _site(port: int, name: str, registered: int, answer, stop: threading.Event) -> None:
    """A site built from the stubs: ``answer(round, params) -> (params, num_examples)``."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = pb_grpc.CoordinatorStub(channel)
        reply = stub.Register(
            pb.RegisterRequest(
                protocol_version=PROTOCOL_VERSION, site_name=name, num_train_examples=registered
            ),
            timeout=10,
            wait_for_ready=True,
        )
        session = Session(
            node_id=reply.node_id,
            token=reply.token,
            run_id=reply.run_id,
            heartbeat_s=1.0,
            chunk_bytes=reply.max_chunk_bytes,
        )
        for _ in range(400):  # bounded: a few polls a second for the test's length
            if stop.is_set():
                return
            task = stub.PullTask(
                pb.PullTaskRequest(node_id=session.node_id, token=session.token, wait_ms=100),
                timeout=10,
            )
            if task.kind == pb.TASK_KIND_SHUTDOWN:
                return
            if task.kind == pb.TASK_KIND_FIT:
                params, _ = fetch_model(channel, session, task)
                new, count = answer(task.round, params)
                push_result(channel, session, task, new, count, {"loss": 1.0})
            elif task.kind == pb.TASK_KIND_EVALUATE:
                push_result(channel, session, task, {}, 10, {"loss": 1.0, "accuracy": 0.5})
    finally:
        channel.close()


def _honest(server_round, params):
    return {k: (v + 1.0).astype(v.dtype) for k, v in params.items()}, 10


def _poisoner(server_round, params):
    if server_round == 1:  # finite, and the largest count it may register
        return {k: np.full_like(v, BIG) for k, v in params.items()}, HUGE
    return _honest(server_round, params)


def test_an_overflowing_aggregate_is_not_committed_and_the_log_verifies(tmp_path: Path):
    records = RunRecords.open(
        RecordSettings(run_dir=tmp_path / "run", config={"test": "poisoned"}, fsync=False)
    )
    transport = GrpcTransport(
        run_id=records.run_id, heartbeat_interval_s=0.2, audit=records.audit.record
    )
    transport.on_rejection = records.write_rejection
    server = build_server(transport, max_workers=8)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    sites = [
        threading.Thread(target=_site, args=(port, name, n, answer, stop), daemon=True)
        for name, n, answer in (
            ("honest", 10, _honest),
            ("poisoner", HUGE, _poisoner),
            ("honest-2", 10, _honest),
        )
    ]
    try:
        for site in sites:
            site.start()
        records.store.save_round(0, INITIAL, {})
        final = RoundDriver(
            transport=transport,
            strategy=FedAvg(server_lr=2.0),  # x + 2 (mean - x): past float32's range
            config=DriverConfig(rounds=2, min_clients=3, round_timeout_s=15, join_timeout_s=15),
            store=records.store,
            site_names=transport.registry.site_name,
            on_round=records.trail.observe_round,
        ).run(INITIAL)
    finally:
        stop.set()
        transport.close(grace_s=1)
        server.stop(grace=0).wait(5)
        for site in sites:
            site.join(10)
    store = records.store
    first, second = store.round_metrics()
    assert "the aggregated model is not finite" in first["round_aborted"]
    assert digest(store.load_round(1)) == digest(INITIAL)  # unchanged for that round
    assert "round_aborted" not in second  # the run went on
    assert all(np.isfinite(v).all() for v in final.values())
    np.testing.assert_array_equal(final["w"], np.full(4, 2.0, dtype=np.float32))
    records.audit.close()
    result = verify_log_file(tmp_path / "run", public_key_pem=records.audit.public_pem)
    assert result.ok, result.reason
    store.close()

"""SecAgg+ over the real gRPC path: an in-process coordinator and real agents on threads.

The coordinator's transport records everything it receives (every pushed
header, every event the driver reads) and every stage request it sends;
each site records what it trained. From those records the tests check that
the coordinator only ever held public keys, encrypted shares, masked uint32
vectors, survivor-set signatures and revealed shares; that every site was
asked to sign and reveal for one survivor set; that each masked vector is far from the
client's own encoded update; that the round's model is the example-weighted
FedAvg of the clients' trained models within the quantization bound; and that
the run directory holds no per-client parameters. A client that answers a
stage with garbage is excluded with a reason while the others aggregate.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from fedops.client.agent import Agent
from fedops.client.secure_participant import SecureParticipant
from fedops.coordinator.grpc_server import build_server
from fedops.coordinator.grpc_transport import GrpcTransport
from fedops.core.params import Params, digest, specs_of
from fedops.core.results import EvaluateResult, FitResult, StageResult
from fedops.core.rounds import Event, NodeDropped, Phase, ResultArrived, ResultRejected
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    MaskedInput,
    MaskRequest,
    PublicKeys,
    Reveal,
    ShareKeys,
    SurvivorSignature,
    UnmaskRequest,
)
from fedops.core.secagg.quantize import MODULUS
from fedops.core.secagg.update import Encoding, encode_update, vector_length
from fedops.core.strategies import FedAvg
from fedops.core.train_settings import TrainPlan
from fedops.core.training import TrainConfig
from fedops.crypto import Crypto
from fedops.runtime.driver import DriverConfig
from fedops.runtime.records import RecordSettings, RunRecords, run_recorded
from fedops.runtime.run import RunPlan
from fedops.runtime.secure_fit import SecAggSettings
from fedops.runtime.settings import SECAGG_CLIP, ClientConfig
from fedops.runtime.store import RunStore
from fedops.runtime.transport import StageRequest
from fedops.tasks import load_task
from fedops.tasks.site import Site, global_evaluator, initial_params
from fedops.v1 import fedops_pb2 as pb
from fedops.wire.secagg import MASKED_TENSOR

pytestmark = pytest.mark.slow  # real gRPC servers or processes: the slow lane

SECAGG_STAGES = {"keys", "shares", "masked", "signature", "reveal"}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # Several agents train on threads of this process; intra-op threads only contend.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _copy(params: Mapping[str, np.ndarray]) -> Params:
    return {k: np.array(v, copy=True) for k, v in params.items()}


class RecordingTransport(GrpcTransport):
    """The real transport, keeping what crosses it (handlers run on gRPC threads)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pushed: list[list[Any]] = []  # [header, payload bytes received], per push
        self.events: list[Event] = []
        self.sent: list[tuple[int, Phase, StageRequest | None]] = []

    def dispatch(self, server_round, nodes, instruction):
        self.sent.append((server_round, instruction.phase, instruction.stage))
        return super().dispatch(server_round, nodes, instruction)

    def push(self, header: pb.ResultHeader, chunks: Iterable[bytes | memoryview]):
        copy = pb.ResultHeader()
        copy.CopyFrom(header)
        entry: list[Any] = [copy, 0]
        self.pushed.append(entry)  # one atomic append per push: safe across gRPC threads

        def counted():
            for chunk in chunks:
                entry[1] += len(chunk)
                yield chunk

        return super().push(header, counted())

    def next_event(self, timeout_s: float) -> Event | None:
        event = super().next_event(timeout_s)
        if event is not None:
            self.events.append(event)
        return event


class RecordingSite(Site):
    """A site that remembers, per round, the model it started from and what it trained."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fits: dict[int, tuple[Params, Params, int]] = {}

    def fit(self, params, server_round, config, **kwargs):
        start = _copy(params)  # the agent's download buffer is reused
        new, n, metrics = super().fit(params, server_round, config, **kwargs)
        self.fits[server_round] = (start, _copy(new), n)
        return new, n, metrics


class WrongTargets(SecureParticipant):
    """Answers the share-keys stage with a share addressed to a client that does not exist."""

    def answer(self, task, fetch):
        reply, payload, n, metrics = super().answer(task, fetch)
        if reply.WhichOneof("stage") == "shares":
            reply.shares.shares[0].target = 999
        return reply, payload, n, metrics


@dataclass
class Run:
    run_dir: Path
    transport: RecordingTransport
    sites: list[RecordingSite]
    summary: dict[str, Any]
    exit_codes: list[int]
    initial: Params
    checkpoints: dict[int, Params] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    participants: dict[int, list[Any]] = field(default_factory=dict)
    rejections: list[dict[str, Any]] = field(default_factory=list)

    def site_of(self, node: str) -> int:
        return int(self.transport.registry.site_name(node).removeprefix("site-"))

    def encoding(self, server_round: int, node: str) -> Encoding:
        for r, phase, stage in self.transport.sent:
            if r == server_round and phase is Phase.SECAGG_MASKED and stage is not None:
                request = stage.messages[node]
                assert isinstance(request, MaskRequest)
                return request.encoding
        raise AssertionError(f"no masked-input stage was sent in round {server_round}")

    def masked(self, server_round: int) -> dict[str, MaskedInput]:
        out = {}
        for event in self.transport.events:
            if (
                isinstance(event, ResultArrived)
                and isinstance(event.result, StageResult)
                and isinstance(event.result.reply, MaskedInput)
                and _round_of(event.task_id) == server_round
            ):
                out[event.node_id] = event.result.reply
        return out


def _round_of(task_id: str) -> int:
    return int(task_id.rsplit("-", 2)[1])  # "<run_id>-<round>-<counter>"


def _run(
    tmp_path: Path,
    *,
    num_sites: int,
    rounds: int,
    secagg: SecAggSettings,
    participant: dict[int, type[SecureParticipant]] | None = None,
) -> Run:
    run_dir = tmp_path / "run"
    config = {"test": "secagg-grpc", "sites": num_sites}
    records = RunRecords.open(  # as the coordinator app opens them
        RecordSettings(run_dir=run_dir, config=config, keep_checkpoints=rounds + 1, fsync=False)
    )
    audit = records.audit  # its head rides on tasks
    transport = RecordingTransport(
        run_id=records.run_id,
        heartbeat_interval_s=1.0,
        on_rejection=records.write_rejection,
        audit=audit.record,
        audit_head=lambda: audit.head,
    )
    server = build_server(transport, max_workers=16)
    port = server.add_insecure_port("127.0.0.1:0")  # the kernel's pick, at bind time
    assert port != 0
    server.start()

    task = load_task("digits")
    train = TrainConfig(epochs=1, batch_size=32)
    sites = [
        RecordingSite(task, site=i, num_sites=num_sites, train_config=train)
        for i in range(num_sites)
    ]
    agents = []
    for i, site in enumerate(sites):
        cfg = ClientConfig(
            coordinator=f"127.0.0.1:{port}",
            task="digits",
            site=i,
            num_sites=num_sites,
            run_dir=tmp_path / f"site{i}",
            max_retries=5,
            poll_wait_s=1.0,
        )
        agent = Agent(cfg, site)
        if participant and i in participant:
            agent.secure = participant[i](site, Crypto(), identity=f"site-{i}")
        agents.append(agent)
    exit_codes: list[int] = []
    threads = [
        threading.Thread(target=lambda a=a: exit_codes.append(a.run()), daemon=True) for a in agents
    ]
    for t in threads:
        t.start()

    initial = initial_params(task, 0)

    def stop(status: str) -> None:
        transport.close(grace_s=10 if status == "completed" else 0.5)
        server.stop(grace=1).wait(5)

    plan = RunPlan(
        label="secagg-test",
        config=config,
        strategy=FedAvg(),
        driver=DriverConfig(
            rounds=rounds,
            min_clients=num_sites,
            round_timeout_s=60,
            join_timeout_s=60,
            seed=0,
            train=TrainPlan(base=train.settings()),  # the run's, with each training task
        ),
        initial_params=lambda: _copy(initial),
        evaluate_global=global_evaluator(task),
        site_names=transport.registry.site_name,
        secagg=secagg,
    )
    try:
        summary = run_recorded(plan, records, transport, on_exit=stop)
    finally:
        for t in threads:
            t.join(timeout=30)
    run = Run(
        run_dir=run_dir,
        transport=transport,
        sites=sites,
        summary=summary,
        exit_codes=exit_codes,
        initial=initial,
    )
    store = RunStore(run_dir, keep_checkpoints=rounds + 1)  # execute closed it
    try:
        run.checkpoints = {r: store.load_round(r) for r in range(rounds + 1)}
        run.metrics = store.round_metrics()
        run.participants = {r: store.participants(r) for r in range(1, rounds + 1)}
        run.rejections = store.rejections()
    finally:
        store.close()
    return run


def _fedavg_bound(encoding: Encoding, weights: list[int]) -> float:
    """The documented error of the secure mean: n steps of the quantizer, rescaled."""
    n = len(weights)
    return n * encoding.quantizer.step * encoding.max_weight / sum(weights)


def _circular_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a.astype(np.uint32) - b.astype(np.uint32)).astype(np.int64)  # wraps mod 2^32
    return np.minimum(d, MODULUS - d)


def _check_matches_fedavg(run: Run, server_round: int, survivors: list[int]) -> None:
    """The round's checkpoint is the weighted mean of the survivors' trained models."""
    start = run.checkpoints[server_round - 1]
    trained = [run.sites[i].fits[server_round] for i in survivors]
    weights = [n for _, _, n in trained]
    total = float(sum(weights))
    node = next(
        p.node_id
        for p in run.participants[server_round]
        if p.phase == "fit" and p.site == f"site-{survivors[0]}"
    )
    encoding = run.encoding(server_round, node)
    assert all(w <= encoding.max_weight for w in weights)  # no weight was capped
    bound = _fedavg_bound(encoding, weights)
    assert 0 < bound < 1e-6
    got = run.checkpoints[server_round]
    for name, ref in start.items():
        deltas = [p[name].astype(np.float64) - ref.astype(np.float64) for _, p, _ in trained]
        # a precondition for comparing with plain FedAvg: nothing was clipped
        assert max(float(np.max(np.abs(d))) for d in deltas) < encoding.quantizer.clip
        expected = sum(
            p[name].astype(np.float64) * (w / total)
            for (_, p, _), w in zip(trained, weights, strict=True)
        )
        error = np.abs(got[name].astype(np.float64) - expected)
        # the quantization bound, plus the final cast of the model to float32
        tolerance = bound + np.spacing(np.abs(expected).astype(np.float32)).astype(np.float64)
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape
        assert np.all(error <= tolerance), (name, float(np.max(error - tolerance)))
        assert not np.array_equal(got[name], ref)  # the model did change


def test_secure_rounds_over_grpc_reveal_only_the_sum(tmp_path: Path):
    num_sites, rounds = 4, 2
    run = _run(
        tmp_path, num_sites=num_sites, rounds=rounds, secagg=SecAggSettings(clip=SECAGG_CLIP)
    )
    assert run.summary["status"] == "completed"
    assert sorted(run.exit_codes) == [0] * num_sites
    assert [m["secagg_survivors"] for m in run.metrics] == [num_sites] * rounds
    assert all("secagg_error" not in m for m in run.metrics)
    assert all(m["num_clients"] == num_sites for m in run.metrics)
    assert run.rejections == []
    for server_round in range(1, rounds + 1):
        fit = [p for p in run.participants[server_round] if p.phase == "fit"]
        assert sorted(p.outcome for p in fit) == ["ok"] * num_sites, fit
        assert sorted(p.num_examples for p in fit) == sorted(
            s.num_train_examples for s in run.sites
        )

    # (a) the coordinator never received a model update: no FIT results, no float tensors
    length = vector_length(run.initial)
    stages_seen = set()
    assert run.transport.pushed, "nothing was pushed"
    for header, nbytes in run.transport.pushed:
        assert header.kind in (pb.TASK_KIND_SECAGG, pb.TASK_KIND_EVALUATE), header.kind
        assert not header.declined, header.declined
        if header.kind == pb.TASK_KIND_EVALUATE:
            assert list(header.tensors) == [] and nbytes == 0
            continue
        stage = header.secagg.WhichOneof("stage")
        stages_seen.add(stage)
        assert stage in SECAGG_STAGES
        if stage == "masked":
            assert [(t.name, t.dtype, list(t.shape)) for t in header.tensors] == [
                (MASKED_TENSOR, "uint32", [length])
            ]
            assert nbytes == 4 * length
        else:
            assert list(header.tensors) == [] and nbytes == 0, stage
    assert stages_seen == SECAGG_STAGES
    kinds = set()
    for event in run.transport.events:
        assert not isinstance(event, ResultRejected | NodeDropped), event
        assert isinstance(event, ResultArrived)
        result = event.result
        assert not isinstance(result, FitResult)
        assert isinstance(result, StageResult | EvaluateResult), type(result)
        if isinstance(result, StageResult):
            reply = result.reply
            assert isinstance(
                reply, PublicKeys | ShareKeys | MaskedInput | SurvivorSignature | Reveal
            ), type(reply)
            if isinstance(reply, MaskedInput):
                assert reply.vector.dtype == np.uint32 and reply.vector.shape == (length,)
            if isinstance(reply, SurvivorSignature):
                assert reply.signature == b""  # these sites have no signing identity
            kinds.add(type(reply))
    assert kinds == {PublicKeys, ShareKeys, MaskedInput, SurvivorSignature, Reveal}
    # (e) every site was asked to sign, then to reveal for, one and the same survivor set;
    # the keys relayed to the sites carried no example counts (only the coordinator sees them)
    for server_round in range(1, rounds + 1):
        sets = {
            phase: {tuple(m.survivors) for m in stage.messages.values()}
            for r, phase, stage in run.transport.sent
            if r == server_round and stage is not None
            and phase in (Phase.SECAGG_CONSISTENCY, Phase.SECAGG_UNMASK)
        }  # fmt: skip
        everyone = tuple(range(1, num_sites + 1))
        assert sets == {Phase.SECAGG_CONSISTENCY: {everyone}, Phase.SECAGG_UNMASK: {everyone}}
        for r, phase, stage in run.transport.sent:
            if r == server_round and phase is Phase.SECAGG_KEYS and stage is not None:
                cohorts = {m.cohort for m in stage.messages.values()}
                assert len(cohorts) == 1 and sorted(next(iter(cohorts))) == sorted(
                    f"site-{i}" for i in range(num_sites)
                )
            if r == server_round and phase is Phase.SECAGG_SHARES and stage is not None:
                relayed = [k for m in stage.messages.values() for k in m.keys]
                assert relayed and all(k.num_examples == 0 for k in relayed)
            if r == server_round and phase is Phase.SECAGG_UNMASK and stage is not None:
                assert all(isinstance(m, UnmaskRequest) for m in stage.messages.values())
            if r == server_round and phase is Phase.SECAGG_CONSISTENCY and stage is not None:
                assert all(isinstance(m, ConsistencyRequest) for m in stage.messages.values())

    for server_round in range(1, rounds + 1):
        masked = run.masked(server_round)
        assert len(masked) == num_sites
        for node, reply in masked.items():
            site = run.sites[run.site_of(node)]
            start, trained, n = site.fits[server_round]
            # every site trained the round's global model
            assert digest(start) == digest(run.checkpoints[server_round - 1])
            # (b) masks were applied: the vector is nowhere near the site's own encoding.
            # Stochastic rounding moves a word by at most one level whatever the rng.
            encoding = run.encoding(server_round, node)
            plain, _ = encode_update(start, trained, n, encoding, np.random.default_rng(7))
            again, _ = encode_update(start, trained, n, encoding, np.random.default_rng(8))
            assert np.max(_circular_distance(plain, again)) <= 1  # the comparison is sound
            far = _circular_distance(reply.vector, plain) > 4
            assert np.mean(far) >= 0.99, (node, float(np.mean(far)))
            assert reply.vector[-1] != n  # even the weight word is masked
        # the masked vectors differ from each other too (no shared mask, no reuse)
        vectors = list(masked.values())
        for i in range(len(vectors)):
            for j in range(i + 1, len(vectors)):
                assert np.mean(vectors[i].vector != vectors[j].vector) > 0.99
        # (c) the model is FedAvg of the trained models, within the quantization bound
        _check_matches_fedavg(run, server_round, list(range(num_sites)))
    # and the secure rounds learn
    losses = [m["global_loss"] for m in run.metrics]
    assert losses[-1] < losses[0], losses

    # (d) the run directory holds global models and bookkeeping, never a client's update
    files = sorted(p.relative_to(run.run_dir).as_posix() for p in run.run_dir.rglob("*"))
    checkpoint_names = [f"checkpoints/round-{r:05d}.safetensors" for r in range(rounds + 1)]
    allowed = {"checkpoints", "state.sqlite", "state.sqlite-wal", "state.sqlite-shm"}
    allowed |= {"metrics.jsonl", "summary.json", "model.safetensors", *checkpoint_names}
    allowed |= {"audit.jsonl", "audit.head", "audit_key.pem", "audit_key.pub"}
    assert set(files) <= allowed, set(files) - allowed
    # the audit log holds digests and counts: no tensor of any update is in it
    for line in (run.run_dir / "audit.jsonl").read_text().splitlines():
        assert len(line) < 20_000, line[:200]
    assert [f for f in files if f.startswith("checkpoints/")] == checkpoint_names
    client_digests = {digest(trained) for site in run.sites for _, trained, _ in site.fits.values()}
    model_specs = specs_of(run.initial)
    for server_round, name in enumerate(checkpoint_names):
        tensors = load_file(str(run.run_dir / name))
        assert sorted(tensors) == sorted(run.initial)
        assert sorted(specs_of(tensors), key=lambda s: s.name) == sorted(
            model_specs, key=lambda s: s.name
        )
        assert digest(run.checkpoints[server_round]) not in client_digests
    db = sqlite3.connect(run.run_dir / "state.sqlite")
    try:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert {"runs", "rounds", "participants", "rejections"} <= set(tables)
        for table in tables:
            for column in db.execute(f"PRAGMA table_info({table})"):
                assert column[2].upper() != "BLOB", (table, column)
            for row in db.execute(f"SELECT * FROM {table}"):
                for value in row:
                    assert not isinstance(value, bytes | memoryview), (table, row)
                    # a serialized update would be thousands of characters
                    assert not isinstance(value, str) or len(value) < 2000, (table, value[:80])
        for (metrics_json,) in db.execute("SELECT metrics_json FROM rounds"):
            metrics = json.loads(metrics_json)
            assert all(isinstance(v, int | float | str) or v is None for v in metrics.values())
    finally:
        db.close()


def test_client_sending_garbage_is_excluded_and_the_others_aggregate(tmp_path: Path):
    num_sites, bad = 5, 2
    run = _run(
        tmp_path,
        num_sites=num_sites,
        rounds=1,
        secagg=SecAggSettings(clip=SECAGG_CLIP),
        participant={bad: WrongTargets},
    )
    assert run.summary["status"] == "completed"
    assert sorted(run.exit_codes) == [0] * num_sites
    (metrics,) = run.metrics
    assert "secagg_error" not in metrics
    assert metrics["secagg_survivors"] == num_sites - 1
    fit = {p.site: p for p in run.participants[1] if p.phase == "fit"}
    assert len(fit) == num_sites
    excluded = fit[f"site-{bad}"]
    assert excluded.outcome == "rejected"
    assert excluded.reason.startswith(f"{Phase.SECAGG_SHARES}:"), excluded.reason
    assert "share" in excluded.reason and "neighbours" in excluded.reason, excluded.reason
    assert excluded.num_examples == 0
    others = [i for i in range(num_sites) if i != bad]
    for i in others:
        assert fit[f"site-{i}"].outcome == "ok" and fit[f"site-{i}"].reason == ""
    # excluded before it masked anything: it was never asked to train
    assert run.sites[bad].fits == {}
    sent_to = {
        phase: set(stage.messages) for _, phase, stage in run.transport.sent if stage is not None
    }
    bad_node = next(n for n in sent_to[Phase.SECAGG_KEYS] if run.site_of(n) == bad)
    assert bad_node in sent_to[Phase.SECAGG_SHARES]
    later = (Phase.SECAGG_MASKED, Phase.SECAGG_CONSISTENCY, Phase.SECAGG_UNMASK)
    assert all(bad_node not in sent_to[phase] for phase in later)
    assert len(run.masked(1)) == num_sites - 1
    _check_matches_fedavg(run, 1, others)


def test_threshold_too_high_for_the_clients_present_fails_with_a_reason(tmp_path: Path):
    """The round is aborted with the reason, the model is unchanged, and the run goes on."""
    run = _run(tmp_path, num_sites=4, rounds=1, secagg=SecAggSettings(degree=8, threshold=6))
    assert run.summary["status"] == "no_progress"  # its only round took no update
    (metrics,) = run.metrics
    assert "secagg threshold 6 must be above half" in metrics["secagg_error"]
    assert metrics["secagg_survivors"] == 0 and metrics["num_clients"] == 0
    assert "round_aborted" in metrics
    assert digest(run.checkpoints[1]) == digest(run.checkpoints[0])
    # no site was asked anything: the coordinator refused its own parameters first
    assert [stage for _, _, stage in run.transport.sent if stage is not None] == []

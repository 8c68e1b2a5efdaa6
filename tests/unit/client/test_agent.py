"""The agent's pieces that run without a coordinator (:mod:`fedops.client.agent`).

Under test: the site's policy (:func:`site_policy`: the kit's rules with the
operator's flags taking precedence, ``--require-secagg`` only adding the
rule) and the name it registers under (:func:`site_name`); and the retry loop
of :meth:`Agent._retrying`: which gRPC status codes are retried (a network
failure) and which are not (the coordinator's decision), the attempt budget
(``--max-retries``) and the duration budget (``--retry-for``, measured on a
virtual clock the backoff waits advance, so nothing sleeps), the exponential
backoff's bounds, a TLS handshake failure said at once, and a stop that ends
the waiting.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from fedops.client import agent as agent_module
from fedops.client.agent import (
    RETRYABLE,
    Agent,
    CoordinatorRefused,
    CoordinatorUnreachable,
    RunOver,
    _Reregister,
    site_name,
    site_policy,
)
from fedops.consortium.kit import Kit
from fedops.core.monitoring.profile import ReportLimits
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.training import TrainConfig
from fedops.runtime.settings import ClientConfig, ConfigError
from fedops.tasks import load_task
from fedops.tasks.site import Site
from fedops.v1 import fedops_pb2 as pb

DIGEST = "c" * 64


def _kit(tmp_path: Path, policy: dict[str, Any], name: str = "bank-a") -> Kit:
    return Kit(
        directory=tmp_path,
        name=name,
        role="site",
        consortium="banks",
        coordinator_name="hub",
        coordinator_address="127.0.0.1:8443",
        policy=policy,
        paths={},
        cert_pem=b"",
        key_pem=b"",
        ca_pem=b"",
        signing_cert_pem=b"",
        signing_key_pem=b"",
    )


def _cfg(**flags: Any) -> ClientConfig:
    return ClientConfig(task="digits", site=1, num_sites=3, **flags)


# -- the site's policy and name -----------------------------------------------------------------


def test_without_kit_or_flags_the_policy_is_the_default() -> None:
    policy = site_policy(_cfg(), None)
    assert policy.max_epsilon is None and policy.max_delta == 1e-5
    assert policy.max_rounds is None and tuple(policy.allowed_tasks) == ()
    assert policy.require_secagg is False and policy.consents() is True
    assert policy.secagg == SecAggPolicy() and policy.report_limits == ReportLimits()


def test_the_flags_alone_make_the_policy(tmp_path: Path) -> None:
    cfg = _cfg(
        max_epsilon=3.0,
        dp_delta=1e-6,
        dp_public_records=200,
        max_rounds=12,
        allowed_task=[DIGEST],
        consent_file=tmp_path / "consent.json",
        monitoring_min_count=8,
        monitoring_max_cells=400,
        secagg_min_cohort=4,
        secagg_max_colluders=1,
    )
    policy = site_policy(cfg, None)
    assert policy.max_epsilon == 3.0
    assert policy.max_delta == 1e-6  # --dp-delta is the δ the site accounts at
    assert policy.dp_public_records == 200
    assert policy.max_rounds == 12
    assert tuple(policy.allowed_tasks) == (DIGEST,)
    assert policy.consent_file == tmp_path / "consent.json"
    assert policy.consents() is False  # the named file does not exist: no consent
    assert policy.report_limits == ReportLimits(min_count=8, max_cells=400)
    assert policy.secagg == SecAggPolicy(min_cohort=4, max_colluders=1)


def test_the_kits_rules_hold_where_no_flag_was_given(tmp_path: Path) -> None:
    kit = _kit(
        tmp_path,
        {"max_epsilon": 8.0, "max_rounds": 50, "allowed_tasks": [DIGEST], "secagg_min_cohort": 5},
    )
    policy = site_policy(_cfg(), kit)
    assert policy.max_epsilon == 8.0
    assert policy.max_rounds == 50
    assert tuple(policy.allowed_tasks) == (DIGEST,)
    assert policy.secagg.min_cohort == 5


def test_flags_take_precedence_over_the_kit(tmp_path: Path) -> None:
    kit = _kit(
        tmp_path,
        {
            "max_epsilon": 8.0,
            "max_delta": 1e-5,
            "max_rounds": 50,
            "allowed_tasks": [DIGEST],
            "monitoring_min_count": 5,
            "secagg_min_cohort": 5,
            "secagg_max_l2_clip": 2.0,
        },
    )
    cfg = _cfg(
        max_epsilon=1.0,
        dp_delta=1e-7,
        max_rounds=3,
        allowed_task=["d" * 64],
        monitoring_min_count=20,
        secagg_min_cohort=9,
        secagg_max_l2_clip=0.5,
    )
    policy = site_policy(cfg, kit)
    assert policy.max_epsilon == 1.0
    assert policy.max_delta == 1e-7
    assert policy.max_rounds == 3
    assert tuple(policy.allowed_tasks) == ("d" * 64,)
    assert policy.report_limits.min_count == 20
    assert policy.secagg.min_cohort == 9 and policy.secagg.max_l2_clip == 0.5


def test_require_secagg_from_the_kit_holds_without_the_flag(tmp_path: Path) -> None:
    assert site_policy(_cfg(), _kit(tmp_path, {"require_secagg": True})).require_secagg is True
    assert site_policy(_cfg(require_secagg=True), _kit(tmp_path, {})).require_secagg is True
    assert site_policy(_cfg(), _kit(tmp_path, {})).require_secagg is False


def test_a_noise_floor_flag_makes_the_site_secagg_only() -> None:
    policy = site_policy(_cfg(secagg_min_noise_multiplier=0.8), None)
    assert policy.require_secagg is True and policy.secagg.min_noise_multiplier == 0.8


def test_a_kit_that_withholds_consent_is_kept(tmp_path: Path) -> None:
    assert site_policy(_cfg(), _kit(tmp_path, {"consent": False})).consents() is False


def test_a_kit_with_an_unknown_rule_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown rule\(s\) \['max_epsilom'\]"):
        site_policy(_cfg(), _kit(tmp_path, {"max_epsilom": 1.0}))


def test_the_site_name_is_the_kits_then_the_flags_then_site_n(tmp_path: Path) -> None:
    kit = _kit(tmp_path, {}, name="hospital-b")
    assert site_name(_cfg(site_name="ignored"), kit) == "hospital-b"
    assert site_name(_cfg(site_name="clinic"), None) == "clinic"
    assert site_name(_cfg(), None) == "site-1"


# -- retries -------------------------------------------------------------------------------------


def test_network_failures_are_retryable_and_the_coordinators_decisions_are_not() -> None:
    assert {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    } == RETRYABLE


class _Rpc(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "down") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Clock:
    """Virtual time: only the agent's backoff waits move it."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []
        self.stop_after: int | None = None  # the wait at which a stop arrives

    def monotonic(self) -> float:
        return self.now

    def wait(self, delay: float) -> bool:
        self.waits.append(delay)
        self.now += delay
        return self.stop_after is not None and len(self.waits) >= self.stop_after

    def set(self) -> None:  # the agent's own shutdown
        pass


@pytest.fixture(scope="module")
def site() -> Site:
    return Site(load_task("digits"), site=1, num_sites=3, train_config=TrainConfig(epochs=1))


@pytest.fixture
def make_agent(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    made: list[Agent] = []

    def make(**flags: Any) -> tuple[Agent, _Clock]:
        a = Agent(_cfg(**flags), site)
        clock = _Clock()
        a._stop = clock  # type: ignore[assignment]
        monkeypatch.setattr(agent_module, "time", types.SimpleNamespace(monotonic=clock.monotonic))
        made.append(a)
        return a, clock

    yield make
    for a in made:
        a.channel.close()
        a.trail.close()


def _failing(errors: list[grpc.RpcError], result: str = "ok") -> tuple[Any, list[int]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return call, calls


@pytest.mark.parametrize("code", sorted(RETRYABLE, key=lambda c: c.name))
def test_a_retryable_failure_is_retried_until_the_call_succeeds(
    make_agent: Any, code: grpc.StatusCode
) -> None:
    agent, clock = make_agent(max_retries=5)
    call, calls = _failing([_Rpc(code), _Rpc(code)])
    assert agent._retrying("register", call) == "ok"
    assert len(calls) == 3 and len(clock.waits) == 2


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNIMPLEMENTED,
    ],
)
def test_a_coordinators_decision_is_raised_at_once(make_agent: Any, code: grpc.StatusCode) -> None:
    agent, clock = make_agent(max_retries=5)
    error = _Rpc(code, "no")
    call, calls = _failing([error])
    with pytest.raises(grpc.RpcError) as info:
        agent._retrying("register", call)
    assert info.value is error
    assert len(calls) == 1 and clock.waits == []


def test_max_retries_bounds_the_attempts_and_the_message_says_so(make_agent: Any) -> None:
    agent, clock = make_agent(max_retries=3)
    call, calls = _failing([_Rpc(grpc.StatusCode.UNAVAILABLE, "connection refused")] * 10)
    with pytest.raises(CoordinatorUnreachable) as info:
        agent._retrying("register", call)
    assert len(calls) == 4 and len(clock.waits) == 3  # the first try and three retries
    assert str(info.value) == (
        "coordinator 127.0.0.1:8765 unreachable: register failed 4 times in a row "
        "(UNAVAILABLE: connection refused); giving up (--max-retries 3)"
    )


def test_no_retries_means_one_attempt(make_agent: Any) -> None:
    agent, clock = make_agent(max_retries=0)
    call, calls = _failing([_Rpc(grpc.StatusCode.DEADLINE_EXCEEDED)] * 3)
    with pytest.raises(CoordinatorUnreachable, match="failed 1 times in a row"):
        agent._retrying("pull", call)
    assert len(calls) == 1 and clock.waits == []


def test_retry_for_bounds_the_time_spent_retrying_not_the_attempts(make_agent: Any) -> None:
    agent, clock = make_agent(max_retries=1, retry_for=30.0)
    call, calls = _failing([_Rpc(grpc.StatusCode.UNAVAILABLE)] * 100)
    with pytest.raises(CoordinatorUnreachable) as info:
        agent._retrying("push result", call)
    assert str(info.value).endswith("giving up (--retry-for 30 s)")
    assert len(calls) > 2  # more than --max-retries 1 allows
    # it gave up at the first failure past the budget: not before, not later
    assert sum(clock.waits) > 30.0 >= sum(clock.waits[:-1])
    assert len(calls) == len(clock.waits) + 1


def test_the_backoff_doubles_from_half_a_second_to_ten_with_jitter(make_agent: Any) -> None:
    agent, clock = make_agent(max_retries=9)
    call, _ = _failing([_Rpc(grpc.StatusCode.UNAVAILABLE)] * 20)
    with pytest.raises(CoordinatorUnreachable):
        agent._retrying("register", call)
    bases = [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert len(clock.waits) == len(bases)
    for wait, base in zip(clock.waits, bases, strict=True):
        assert 0.5 * base <= wait < 1.5 * base, (wait, base)


def test_a_failed_tls_handshake_is_said_at_once(make_agent: Any) -> None:
    agent, clock = make_agent(max_retries=5)
    details = "failed to connect to all addresses; last error: Handshake failed"
    call, calls = _failing([_Rpc(grpc.StatusCode.UNAVAILABLE, details)])
    with pytest.raises(CoordinatorRefused) as info:
        agent._retrying("register", call)
    assert str(info.value).startswith("TLS handshake with 127.0.0.1:8765 failed")
    assert str(info.value).endswith(details)
    assert len(calls) == 1 and clock.waits == []


def test_a_connection_closed_at_once_hints_at_tls_without_a_kit(make_agent: Any) -> None:
    agent, _ = make_agent(max_retries=0)
    call, _ = _failing([_Rpc(grpc.StatusCode.UNAVAILABLE, "Socket closed")])
    with pytest.raises(CoordinatorUnreachable, match=r"does it need TLS, a consortium kit"):
        agent._retrying("register", call)
    call, _ = _failing([_Rpc(grpc.StatusCode.UNAVAILABLE, "connection refused")])
    with pytest.raises(CoordinatorUnreachable) as info:
        agent._retrying("register", call)
    assert "TLS" not in str(info.value)


def test_a_stop_during_the_backoff_ends_the_retrying(make_agent: Any) -> None:
    agent, clock = make_agent(max_retries=30)
    clock.stop_after = 2
    call, calls = _failing([_Rpc(grpc.StatusCode.UNAVAILABLE)] * 30)
    with pytest.raises(CoordinatorUnreachable, match=r"^stopped$"):
        agent._retrying("pull", call)
    assert len(calls) == 2


def test_an_unknown_node_registers_again(make_agent: Any) -> None:
    agent, _ = make_agent(max_retries=3)
    call, calls = _failing([_Rpc(grpc.StatusCode.UNAUTHENTICATED, "unknown node")])
    with pytest.raises(_Reregister):
        agent._guarded("pull", call)
    assert len(calls) == 1
    other, _ = _failing([_Rpc(grpc.StatusCode.PERMISSION_DENIED, "revoked")])
    with pytest.raises(grpc.RpcError) as info:
        agent._guarded("pull", other)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # not a reason to re-register


class _Registrar:
    """A coordinator's Register, as a malicious one may answer it."""

    def __init__(
        self, reply: pb.RegisterResponse | None = None, error: grpc.RpcError | None = None
    ):
        self.reply, self.error = reply, error
        self.asked: list[pb.RegisterRequest] = []

    def Register(self, request: pb.RegisterRequest, timeout: float) -> pb.RegisterResponse:
        self.asked.append(request)
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


def test_a_standing_site_registers_only_for_the_run_it_accepted(site: Site) -> None:
    agent = Agent(_cfg(), site, run_id="accepted")
    try:
        other = pb.RegisterResponse(node_id="n", token="t", run_id="something-else")
        agent.stub = _Registrar(other)  # type: ignore[assignment]
        with pytest.raises(RunOver, match="serves run 'something-else', not accepted"):
            agent._register()
        assert agent.stub.asked[0].run_id == "accepted"  # type: ignore[attr-defined]
        agent.stub = _Registrar(error=_Rpc(grpc.StatusCode.FAILED_PRECONDITION, "not here"))  # type: ignore[assignment]
        with pytest.raises(RunOver, match="not here"):
            agent._register()
        same = pb.RegisterResponse(node_id="n", token="t", run_id="accepted")
        agent.stub = _Registrar(same)  # type: ignore[assignment]
        assert agent._register().run_id == "accepted"
    finally:
        agent.channel.close()
        agent.trail.close()


def test_a_plain_agent_is_pinned_to_the_run_of_its_first_registration(site: Site) -> None:
    """A coordinator answering a later registration with another run would start the
    site's per-run state afresh (red team, issue 20)."""
    agent = Agent(_cfg(), site)
    try:
        first = pb.RegisterResponse(node_id="n", token="t", run_id="run-1")
        agent.stub = _Registrar(first)  # type: ignore[assignment]
        agent._register()
        later = pb.RegisterResponse(node_id="n", token="t", run_id="run-2")
        agent.stub = _Registrar(later)  # type: ignore[assignment]
        with pytest.raises(RunOver, match="serves run 'run-2', not run-1"):
            agent._register()
        assert agent.stub.asked[0].run_id == "run-1"  # type: ignore[attr-defined]
    finally:
        agent.channel.close()
        agent.trail.close()


def test_a_per_run_budget_needs_a_standing_site_and_a_total_budget() -> None:
    with pytest.raises(ConfigError, match="max_run_epsilon"):
        ClientConfig(task="digits", max_run_epsilon=1.0, max_epsilon=5.0)
    with pytest.raises(ConfigError, match="max_run_epsilon"):
        ClientConfig(standing=True, tasks=("digits",), run_dir=Path("x"), max_run_epsilon=1.0)

"""The fit phase under secure aggregation: five round trips, and only the sum is seen.

A round plug-in that replaces the plain fit phase of the round driver, it
drives the pure :class:`~fedops.core.secagg.server.SecAggServer` over any
transport (gRPC or simulated), so deployment and simulation run the same
protocol code. The outcome is one :class:`FitResult` holding the example-
weighted mean model, which FedAvg and FedProx aggregate to itself; nothing
that leaves this module is an individual update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedops.core.params import Params, TensorSpec, model_digest
from fedops.core.results import FitResult, StageResult
from fedops.core.rounds import Outcome, Phase, RoundTracker
from fedops.core.secagg.messages import (
    MaskedInput,
    PublicKeys,
    Reply,
    Reveal,
    ShareKeys,
    SurvivorSignature,
    round_context,
    round_terms,
)
from fedops.core.secagg.primitives import ProtocolError, SecAggAborted, SecAggCrypto
from fedops.core.secagg.quantize import MODULUS
from fedops.core.secagg.server import SecAggServer, SecureSum
from fedops.core.secagg.update import decode_mean, vector_length
from fedops.core.train_settings import TrainSettings
from fedops.runtime.collect import collect
from fedops.runtime.round_plugin import FitOutcome, RoundContext, RoundPlugin
from fedops.runtime.store import Participant
from fedops.runtime.transport import Instruction, StageRequest, Transport
from fedops.wire.secagg import MASKED_TENSOR

log = logging.getLogger("fedops.secagg")


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggSettings:
    """``secagg.*`` keys: neighbourhood degree, threshold and the quantizer's clipping range."""

    degree: int | None = None
    threshold: int | None = None
    clip: float = 4.0  # = settings.SECAGG_CLIP, the CLI's and Hydra's default
    min_survivors: int | None = None


class NoiseSource(Protocol):
    """What a DP mechanism tells the secure fit phase each round."""

    def secure_noise(self) -> tuple[float, float] | None:
        """``(σ, clip)`` of the distributed noise the clients add, or None."""
        ...

    def survivor_floor(self) -> int:
        """The fewest noise shares the round's accounting assumes."""
        ...


class SecureFit(RoundPlugin):
    """Runs SecAgg+ rounds over ``transport``.

    Args:
        run_id: with the round number, the context every key and share is bound to.
        site_names: node id -> site name, for the participants table.
        noise: the run's DP mechanism, asked each round for the distributed noise the
            clients add and the fewest survivors its accounting assumes.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        settings: SecAggSettings,
        crypto: SecAggCrypto,
        run_id: str,
        timeout_s: float,
        site_names: Callable[[str], str] = lambda node: node,
        noise: NoiseSource | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.crypto = crypto
        self.run_id = run_id
        self.timeout_s = timeout_s
        self.site_names = site_names
        self.noise = noise

    def client_config_refusal(self) -> str:
        return (
            "under secure aggregation every site trains with the round's one config: a "
            "config of its own could fingerprint its contribution to the sum"
        )

    def run_fit(
        self,
        ctx: RoundContext,
        server_round: int,
        selected: Sequence[str],
        params: Params,
        fit_config: Mapping[str, float],
    ) -> FitOutcome:
        train = ctx.config.train_at(server_round)
        if self.noise is None:
            return self.run(server_round, selected, params, fit_config, train=train)
        return self.run(
            server_round,
            selected,
            params,
            fit_config,
            noise=self.noise.secure_noise(),
            min_survivors=self.noise.survivor_floor(),
            train=train,
        )

    def run(
        self,
        server_round: int,
        nodes: Sequence[str],
        params: Params,
        config: Mapping[str, float],
        *,
        noise: tuple[float, float] | None = None,
        min_survivors: int = 0,
        train: TrainSettings | None = None,
    ) -> FitOutcome:
        """One secure fit phase; ``noise=(σ, clip)`` makes the clients add distributed DP,
        ``min_survivors`` is the fewest noise shares its accounting assumes, and ``train``
        the run's training settings the masked-input stage trains with."""
        return _SecureRound(
            self, server_round, sorted(nodes), params, config, noise, min_survivors, train=train
        ).run()


def bounded(start: Params, mean: Params, clip: float) -> Params:
    """``mean`` moved at most ``clip`` per value from ``start``, and finite.

    An honest weighted mean of clipped updates never moves a value further; a site
    that lied about its example count could (the sum is divided by the counts), so
    the step is clamped: a lie biases one round, it cannot put the model out of range.
    """
    out: Params = {}
    for name, old in start.items():
        base = np.asarray(old, np.float64)
        step = np.clip(np.asarray(mean[name], np.float64) - base, -clip, clip)
        new = base + np.nan_to_num(step, nan=0.0)  # a value that is no number does not move
        if np.issubdtype(old.dtype, np.integer) or old.dtype == np.bool_:
            new = np.rint(new)
        out[name] = new.astype(old.dtype)
    return out


class _SecureRound:
    """One round's state: who is which index, and why each node left."""

    def __init__(
        self,
        owner: SecureFit,
        server_round: int,
        nodes: list[str],
        params: Params,
        config: Mapping[str, float],
        noise: tuple[float, float] | None,
        min_survivors: int,
        *,
        train: TrainSettings | None = None,
    ) -> None:
        self.owner = owner
        self.server_round = server_round
        self.nodes = nodes
        self.params = params
        self.config = config
        self.index = {node: i for i, node in enumerate(nodes, start=1)}
        self.node = {i: node for node, i in self.index.items()}
        self.left: dict[str, tuple[Outcome, str]] = {}
        self.trained: dict[str, StageResult] = {}
        self.noise = noise  # (σ, clip): the clients add distributed DP noise
        self.dp_min_survivors = min_survivors
        self.train = train  # the run's training settings, for the masked-input stage

    def run(self) -> FitOutcome:
        server = None
        try:
            server = self._server()
            result = self._protocol(server)
        except SecAggAborted as exc:
            log.error("round %d: %s", self.server_round, exc)
            if server is not None:  # who provably lied or dealt badly is named even then
                self._note_excluded(server, proven_only=True)
            return self._outcome([], {"secagg_error": str(exc), **self._accused(server)})
        return self._outcome(
            [result],
            {
                "secagg_degree": server.degree,
                "secagg_threshold": server.threshold,
                **self._accused(server),
            },
        )

    def _accused(self, server: SecAggServer | None) -> dict[str, str]:
        """The sites whose shares neighbours complained about, each with how many did.

        Not proof (a colluder may complain falsely, so nobody is excluded for it), but a
        dealer of bad shares leaves its honest neighbours out of the sum, or aborts the
        round, and without this only they would show (red team 2026-12-07)."""
        if server is None or not server.accused:
            return {}
        named = ", ".join(
            f"{self.owner.site_names(self.node[dealer])} ({len(holders)})"
            for dealer, holders in sorted(server.accused.items())
        )
        log.warning(
            "round %d: neighbours complained about the shares of %s", self.server_round, named
        )
        return {"secagg_accused": named}

    def _server(self) -> SecAggServer:
        s, n = self.owner.settings, len(self.nodes)
        if n < 2:
            raise SecAggAborted(f"secure aggregation needs at least 2 clients, got {n}")
        try:
            return SecAggServer(
                context=round_context(self.owner.run_id, self.server_round),
                cohort=self._cohort(),
                vector_length=vector_length(self.params),
                clip=s.clip,
                crypto=self.owner.crypto,
                degree=s.degree,
                threshold=s.threshold,
                min_survivors=s.min_survivors,
                dp_min_survivors=self.dp_min_survivors,
                noise=self.noise,
                # what every site trains this round, sealed: a site given another model or
                # other settings than its neighbours masks nothing (red team 2026-12-07)
                terms=round_terms(model_digest(self.params), self.train, self.config),
            )
        except ValueError as exc:  # e.g. a threshold this round's neighbourhoods cannot meet
            raise SecAggAborted(
                f"{exc} with the {n} clients of this round (secagg k/threshold); the round "
                "is aborted and the model is unchanged"
            ) from exc

    def _cohort(self) -> list[str]:
        """Site names by index; a site with two nodes here is named apart (its agent refuses)."""
        names = [self.owner.site_names(self.node[i]) for i in sorted(self.node)]
        seen: set[str] = set()
        out = []
        for i, name in enumerate(names, start=1):
            out.append(name if name not in seen else f"{name} (node {self.node[i]})")
            seen.add(name)
        return out

    def _protocol(self, server: SecAggServer) -> FitResult:
        requests: Mapping[int, Any] = {i: server.setup_for(i) for i in self.node}
        self._stage(Phase.SECAGG_KEYS, requests, PublicKeys, server.receive_keys)
        requests = server.close_keys()
        self._stage(Phase.SECAGG_SHARES, requests, ShareKeys, server.receive_shares)
        requests = server.close_shares()
        spec = TensorSpec(name=MASKED_TENSOR, dtype="uint32", shape=(server.vector_length,))
        self._stage(
            Phase.SECAGG_MASKED, requests, MaskedInput, server.receive_masked, specs=(spec,)
        )
        requests = server.close_masked()
        self._stage(Phase.SECAGG_CONSISTENCY, requests, SurvivorSignature, server.receive_signature)
        requests = server.close_consistency()
        self._stage(Phase.SECAGG_UNMASK, requests, Reveal, server.receive_reveal)
        secure_sum = server.finish()
        # the coordinator has seen one noised sum: distributed DP spends (and commits) it
        # now, before anything below can fail and leave the round unaccounted
        unmasked = getattr(self.owner.noise, "unmasked", None)
        if unmasked is not None:
            unmasked(len(secure_sum.survivors))
        self._note_excluded(server)
        survivors = [self.node[i] for i in secure_sum.survivors]
        params, weight = self._decode(secure_sum, survivors)
        self.trained = {n: r for n, r in self.trained.items() if n in survivors}
        log.info(
            "round %d: securely aggregated %d of %d clients (%d examples)",
            self.server_round,
            len(survivors),
            len(self.nodes),
            weight,
        )
        return FitResult(node_id="secagg", params=params, num_examples=weight)

    def _decode(self, secure_sum: SecureSum, survivors: list[str]) -> tuple[Params, int]:
        """The mean model, weighted by the example counts the survivors reported.

        A site may put anything in its masked vector, its weight word included. The
        coordinator knows each survivor's count anyway (it travels in the clear), so the
        sum is divided by those counts, capped as the encoding caps them: a lying site
        biases the sum, as it could without SecAgg, but cannot stop the round (an abort
        after the survivors signed would leave them refusing that round again).
        """
        encoding = secure_sum.encoding
        reported = [self.trained[n].num_examples for n in survivors if n in self.trained]
        if encoding.private:
            expected = len(survivors)
        else:
            expected = sum(min(max(int(n), 1), encoding.max_weight) for n in reported)
        total = secure_sum.total
        got = int(total[-1])
        if got != expected:
            log.warning(
                "round %d: the unmasked sum carries weight %d but its %d sites reported %d: "
                "a site sent a malformed masked input; decoding with the reported counts",
                self.server_round,
                got,
                len(survivors),
                expected,
            )
            total = total.copy()
            total[-1] = expected % MODULUS
        params, weight = decode_mean(self.params, total, len(survivors), encoding)
        return bounded(self.params, params, encoding.quantizer.clip), weight

    def _stage(
        self,
        phase: Phase,
        requests: Mapping[int, Any],
        reply_type: type,
        receive: Callable[[int, Any], None],
        specs: tuple[TensorSpec, ...] = (),
    ) -> None:
        messages = {self.node[i]: r for i, r in requests.items()}
        instruction = Instruction(
            phase=phase,
            params=self.params,
            config=self.config,
            stage=StageRequest(messages=messages, result_specs=specs),
            train=self.train,
        )
        tracker = collect(
            self.owner.transport,
            self.server_round,
            list(messages),
            instruction,
            timeout_s=self.owner.timeout_s,
        )
        self._note_left(tracker)
        for result in tracker.results:
            assert isinstance(result, StageResult)
            reply: Reply = result.reply  # type: ignore[assignment]
            try:
                if not isinstance(reply, reply_type):
                    raise ProtocolError(f"expected a {reply_type.__name__} reply")
                receive(self.index[result.node_id], reply)
            except ProtocolError as exc:
                reason = f"{phase}: {exc}"
                log.warning("round %d: %s excluded: %s", self.server_round, result.node_id, reason)
                self.left[result.node_id] = (Outcome.REJECTED, reason)
                continue
            if phase is Phase.SECAGG_MASKED:
                self.trained[result.node_id] = result

    def _note_left(self, tracker: RoundTracker) -> None:
        for node, outcome in tracker.outcomes.items():
            if outcome is not Outcome.OK and node not in self.left:
                self.left[node] = (outcome, f"{tracker.phase}: {tracker.reasons.get(node, '')}")

    def _note_excluded(self, server: SecAggServer, *, proven_only: bool = False) -> None:
        """Why the server left clients out. On an abort only what it checked itself: a
        complaint there may be an honest site's about a dishonest dealer."""
        for i, reason in (server.proven if proven_only else server.excluded).items():
            node = self.node[i]
            if node not in self.left:
                self.left[node] = (Outcome.REJECTED, f"secagg: {reason}")

    def _outcome(self, results: list[FitResult], metrics: dict[str, Any]) -> FitOutcome:
        survivors = set(self.trained) if results else set()
        participants = []
        for node in self.nodes:
            outcome, reason = self.left.get(node, (Outcome.OK, ""))
            if node in survivors:
                outcome = Outcome.OK  # its input is in the sum, even if it left afterwards
            elif outcome is Outcome.OK:
                outcome, reason = Outcome.REJECTED, metrics.get("secagg_error", "not aggregated")
            trained = self.trained.get(node)
            participants.append(
                Participant(
                    phase=str(Phase.FIT),
                    node_id=node,
                    site=self.owner.site_names(node),
                    outcome=str(outcome),
                    num_examples=trained.num_examples if trained else 0,
                    reason=reason,
                )
            )
        metrics["secagg_survivors"] = len(survivors)
        reported: list[FitResult | StageResult] = [self.trained[n] for n in sorted(survivors)]
        return FitOutcome(
            results=results, reported=reported, participants=participants, metrics=metrics
        )

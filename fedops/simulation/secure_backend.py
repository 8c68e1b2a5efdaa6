"""Secure aggregation in a simulation: every virtual client runs the real SecAgg+ client.

:class:`SecureSimTransport` wraps the in-process backends (sequential, vectorized): the
clients' side runs in this process. The process and Ray backends run each client's side in
the worker that owns it instead (:mod:`fedops.simulation.secure_worker`, the same steps).
The coordinator side is the deployment's own :class:`~fedops.runtime.secure_fit.SecureFit`;
here each virtual node holds a :class:`~fedops.core.secagg.client.SecAggClient` with
real X25519/AES keys, so a simulated round performs the full protocol,
consistency check included, messages passing in memory instead of over gRPC.

Training goes through the wrapped backend (so vectorized training still
trains clients together) when the round starts; a client the fault plan
drops, or whose update is refused, leaves the protocol at the masked-input
stage: after it shared its keys, the case the protocol must recover from.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from fedops.core.params import Params, model_digest
from fedops.core.results import FitResult, StageResult
from fedops.core.rounds import Event, NodeDropped, Phase, ResultArrived, ResultRejected
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.messages import MaskRequest, Setup, round_terms
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.primitives import ProtocolError, SecAggCrypto
from fedops.core.secagg.update import encode_update
from fedops.core.train_settings import TrainSettings
from fedops.runtime.transport import Instruction, StageRequest, Transport
from fedops.simulation.sim_transport import client_index, task_ids

#: how long the wrapped backend may take to train one round's clients
TRAIN_TIMEOUT_S = 24 * 3600.0


class SecureSimTransport:
    def __init__(
        self,
        inner: Transport,
        crypto: SecAggCrypto,
        *,
        seed: int,
        noise_seed: int | None = None,
        policy: SecAggPolicy | None = None,
    ) -> None:
        self.inner = inner
        self.crypto = crypto
        self.seed = seed
        #: distributed DP's noise: None draws it from OS entropy, as a deployed site does
        #: (noise from the run's public seed would be noise the coordinator can subtract)
        self.noise_seed = noise_seed
        self.policy = policy  # the virtual sites' floors (the deployment's defaults)
        self._clients: dict[str, SecAggClient] = {}
        self._trained: dict[str, Event] = {}
        self._terms = b""  # what this round's virtual sites trained (round_terms)
        self._events: deque[Event] = deque()

    # -- delegated -----------------------------------------------------------
    def wait_for_nodes(self, count: int, timeout_s: float) -> list[str]:
        return self.inner.wait_for_nodes(count, timeout_s)

    def available_nodes(self) -> list[str]:
        return self.inner.available_nodes()

    def fetch_initial_params(self, timeout_s: float) -> Params:
        return self.inner.fetch_initial_params(timeout_s)

    def close(self) -> None:
        self.inner.close()

    # -- the protocol ----------------------------------------------------------
    def dispatch(
        self, server_round: int, nodes: Sequence[str], instruction: Instruction
    ) -> dict[str, str]:
        stage, phase, params = instruction.stage, instruction.phase, instruction.params
        if stage is None:
            return self.inner.dispatch(server_round, nodes, instruction)
        config = instruction.config
        tasks = task_ids(server_round, phase, nodes)
        if phase is Phase.SECAGG_KEYS:
            self._train(server_round, nodes, params, config, instruction.train)
            self._clients = {}
        for node in nodes:
            event = self._answer(server_round, phase, node, tasks[node], stage, params)
            self._events.append(event)
        if phase is Phase.SECAGG_UNMASK:
            self._clients, self._trained = {}, {}
        return tasks

    def next_event(self, timeout_s: float) -> Event | None:
        if self._events:
            return self._events.popleft()
        return self.inner.next_event(timeout_s)  # plain phases (evaluation)

    def _train(
        self,
        server_round: int,
        nodes: Sequence[str],
        params: Params,
        config: Mapping[str, float],
        train: TrainSettings | None,
    ) -> None:
        """Train every node now through the backend, with the run's ``train`` (the driver
        gives every stage the round's; a deployed site trains at the masked-input stage);
        keep each one's event for stage 3."""
        fit = Instruction(phase=Phase.FIT, params=params, config=config, train=train)
        # what the virtual sites trained, as a deployed site computes it from its task
        self._terms = round_terms(model_digest(params), train, config)
        tasks = self.inner.dispatch(server_round, nodes, fit)
        self._trained = {}
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while len(self._trained) < len(nodes) and time.monotonic() < deadline:
            event = self.inner.next_event(1.0)
            if event is None or event.node_id not in tasks:
                continue
            if isinstance(event, NodeDropped) or event.task_id == tasks[event.node_id]:
                self._trained[event.node_id] = event

    def _answer(
        self,
        server_round: int,
        phase: Phase,
        node: str,
        task_id: str,
        stage: StageRequest,
        params: Params,
    ) -> Event:
        message = stage.messages[node]
        try:
            if phase is Phase.SECAGG_KEYS:
                assert isinstance(message, Setup)
                client = self._clients[node] = SecAggClient(
                    message, self.crypto, policy=self.policy
                )
                trained = self._trained.get(node)
                examples = trained.result.num_examples if isinstance(trained, ResultArrived) else 1
                reply: object = client.advertise(examples)
            elif phase is Phase.SECAGG_MASKED:
                assert isinstance(message, MaskRequest)
                return self._mask(server_round, node, task_id, message, params)
            elif phase is Phase.SECAGG_SHARES:
                reply = self._clients[node].share(message)  # type: ignore[arg-type]
            elif phase is Phase.SECAGG_CONSISTENCY:
                reply = self._clients[node].sign_survivors(message)  # type: ignore[arg-type]
            else:
                reply = self._clients[node].unmask(message)  # type: ignore[arg-type]
        except ProtocolError as exc:
            return ResultRejected(node_id=node, task_id=task_id, reason=str(exc))
        return ResultArrived(
            node_id=node, task_id=task_id, result=StageResult(node_id=node, reply=reply)
        )

    def _mask(
        self, server_round: int, node: str, task_id: str, request: MaskRequest, params: Params
    ) -> Event:
        trained = self._trained.get(node)
        if trained is None:
            return NodeDropped(node_id=node, reason="no training result")
        if isinstance(trained, ResultRejected):
            return ResultRejected(node_id=node, task_id=task_id, reason=trained.reason)
        if not isinstance(trained, ResultArrived):
            return trained  # dropped while training
        result = trained.result
        assert isinstance(result, FitResult)
        if request.encoding.private:
            entropy = None if self.noise_seed is None else [self.noise_seed, server_round]
            rng = np.random.default_rng(entropy and [*entropy, client_index(node)])
        else:
            rng = np.random.default_rng([self.seed, server_round, client_index(node)])
        vector, clipped = encode_update(
            params, result.params, result.num_examples, request.encoding, rng
        )
        masked = self._clients[node].mask(request, vector, self._terms)
        reply = StageResult(
            node_id=node,
            reply=masked,
            num_examples=0 if request.encoding.private else result.num_examples,
            # distributed DP: nothing of the site's leaves outside the noised sum
            metrics={}
            if request.encoding.private
            else {**result.metrics, "secagg_clipped": clipped},
        )
        return ResultArrived(node_id=node, task_id=task_id, result=reply)

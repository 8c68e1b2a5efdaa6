"""The parent's side of simulated SecAgg+ clients that live in workers.

On the process and Ray backends the parent is the simulated coordinator only: it
serializes each client's stage request as the wire does (:mod:`fedops.wire.secagg`),
sends it to the worker that owns the client (:mod:`fedops.simulation.secure_worker`),
and decodes the reply that comes back, as a deployed coordinator decodes a site's.
No key, seed, share in the clear or trained model of a client is ever in this process.

Injected faults are the parent's: a client the fault plan drops trains nothing, still
advertises its keys and shares, and leaves at the masked-input stage, the case the
protocol must recover from (as in :mod:`fedops.simulation.secure_backend`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError

from fedops.core.params import InvalidUpdate, model_digest
from fedops.core.results import StageResult
from fedops.core.rounds import Event, Phase, ResultArrived, ResultRejected
from fedops.core.secagg.messages import round_terms
from fedops.core.secagg.primitives import ProtocolError
from fedops.runtime.transport import Instruction
from fedops.simulation.jobs import Job, decode
from fedops.simulation.secure_worker import StageAnswer, StageJob
from fedops.simulation.sim_transport import client_index, node_id
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import secagg as secagg_codec


class SecureStages:
    """Turns a round's SecAgg+ stages into jobs for the clients' owners, and answers back.

    Args:
        seed: the run's seed (stochastic rounding, as the in-process path seeds it).
        noise_seed: distributed DP's noise seed; None: each worker draws from OS entropy.
    """

    def __init__(self, *, seed: int, noise_seed: int | None) -> None:
        self.seed = seed
        self.noise_seed = noise_seed
        self._left: dict[str, Event] = {}  # node -> how it dropped while training

    def jobs(
        self,
        server_round: int,
        nodes: Sequence[str],
        instruction: Instruction,
        fits: tuple[list[Job], list[Event]],
    ) -> tuple[list[StageJob], list[Event]]:
        """The stage's jobs, and the events due now instead of some of them.

        ``fits`` are the key stage's fit jobs and injected dropouts
        (:func:`~fedops.simulation.pool.fault_jobs`); other stages ignore them.
        """
        stage, phase = instruction.stage, instruction.phase
        assert stage is not None
        trains: dict[int, Job] = {}
        terms = b""
        if phase is Phase.SECAGG_KEYS:
            trains = {job[1]: job for job in fits[0]}
            self._left = {event.node_id: event for event in fits[1]}
            # what the round's sites train, as a deployed site computes it from its task (a
            # simulated straggler's fewer epochs are its own, as a slow site's time is)
            params, train, config = instruction.params, instruction.train, instruction.config
            terms = round_terms(model_digest(params), train, config)
        due: list[Event] = []
        jobs: list[StageJob] = []
        for node in nodes:
            if phase is Phase.SECAGG_MASKED and node in self._left:
                due.append(self._left[node])  # dropped while training: no masked input
                continue
            client = client_index(node)
            request = secagg_codec.request_to_proto(stage.messages[node])  # type: ignore[arg-type]
            jobs.append(
                StageJob(
                    phase=str(phase),
                    client=client,
                    server_round=server_round,
                    request=request.SerializeToString(),
                    fit=trains.get(client),
                    seeds=(self.seed, self.noise_seed),
                    terms=terms,
                )
            )
        if phase is Phase.SECAGG_UNMASK:
            self._left = {}
        return jobs, due

    def event(
        self, answer: StageAnswer, phase: Phase, server_round: int, tasks: Mapping[str, str]
    ) -> Event | None:
        """The round driver's event for one answer; None for an answer to an earlier
        stage (one that came back after its stage's deadline)."""
        node = node_id(answer.client)
        if answer.phase != phase or answer.server_round != server_round or node not in tasks:
            return None
        task_id = tasks[node]
        if answer.refused:
            return ResultRejected(node_id=node, task_id=task_id, reason=answer.refused)
        try:
            payload = decode(answer.payload) if answer.payload is not None else {}
            reply = secagg_codec.reply_from_proto(pb.SecAggReply.FromString(answer.reply), payload)
        except (InvalidUpdate, ProtocolError, DecodeError) as exc:
            return ResultRejected(node_id=node, task_id=task_id, reason=str(exc))
        result = StageResult(
            node_id=node, reply=reply, num_examples=answer.num_examples, metrics=answer.metrics
        )
        return ResultArrived(node_id=node, task_id=task_id, result=result)

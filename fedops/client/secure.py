"""The agent's side of secure aggregation: one :class:`SecAggClient` per round.

The site trains at the masked-input stage, so a site that goes away while
training is simply a client that dropped after sharing its keys, which the
protocol recovers from. Every message is checked against the stage the round
is in; anything else is refused (the agent declines the task and its audit
log says why), and :class:`SigningRecord` keeps a coordinator from replaying
rounds or start models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedops.consortium.kit import Kit
from fedops.consortium.signing import CertificateVerifier
from fedops.consortium.tls import Revocation
from fedops.core.params import Params
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.messages import (
    ConsistencyRequest,
    MaskRequest,
    NeighbourKeys,
    Setup,
    UnmaskRequest,
    round_context,
)
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.primitives import ProtocolError, SecAggCrypto, Signer, Verifier
from fedops.core.secagg.update import encode_update
from fedops.crypto import Identity, TrustedKeys
from fedops.tasks.site import Site
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import secagg as secagg_codec


class SigningRecord:
    """Which rounds and start models this site has signed a survivor set for, per run.

    Signing the survivor set is what lets the coordinator unmask this site's input
    (its neighbours reveal its self-mask only after checking that signature). A
    site that signed for round r, or for a start model, never masks again for a
    round up to r of that run, or from that model in any run (the run id is the
    coordinator's to choose): a coordinator that replays a round, or reruns a
    model with a different cohort, cannot difference two sums that both hold
    this site's update. Kept in ``secagg_signed.json`` in the site's
    run directory (written and fsynced before the signature leaves), so a
    restarted agent remembers; without a run directory, in memory only.
    """

    FILE = "secagg_signed.json"

    def __init__(self, run_dir: Path | None) -> None:
        self.path = Path(run_dir) / self.FILE if run_dir is not None else None
        self._runs: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            try:
                loaded = json.loads(self.path.read_text())
            except (OSError, ValueError) as exc:
                raise ProtocolError(
                    f"{self.path} is unreadable ({exc}): refusing secure aggregation rather "
                    "than forget what this site signed"
                ) from exc
            self._runs = loaded if isinstance(loaded, dict) else {}

    def _run(self, run_id: str) -> dict[str, Any]:
        return self._runs.get(run_id, {"last_round": 0, "models": []})

    def check_round(self, run_id: str, server_round: int) -> None:
        last = int(self._run(run_id)["last_round"])
        if server_round <= last:
            raise ProtocolError(
                f"round {server_round}: this site already signed the survivor set of round "
                f"{last} of this run; rounds only go forward (replay refused)"
            )

    def check_model(self, run_id: str, digest: str) -> None:
        # every run's, not only ``run_id``'s: the run id is the coordinator's word, and a
        # coordinator that names a new run would otherwise get a second sum from the model
        for run, record in self._runs.items():
            if digest in record["models"]:
                where = "this run" if run == run_id else f"run {run!r}"
                raise ProtocolError(
                    f"this site already contributed an update trained from model "
                    f"{digest[:12]}… to a signed round of {where}: training it again would let "
                    "two sums be differenced"
                )

    def remember(self, run_id: str, server_round: int, digest: str) -> None:
        run = self._run(run_id)
        self._runs[run_id] = {
            "last_round": max(int(run["last_round"]), server_round),
            "models": [*run["models"], digest],
        }
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self._runs, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class SecureParticipant:
    """Answers SecAgg tasks for one site: one :class:`SecAggClient` per round, in order.

    Args:
        sign / verify / identity: the site's signing identity and its trust in
            other sites' keys (consortium mode); both ``None`` otherwise.
        certificate: what vouches for ``sign``'s key (the kit's signing
            certificate), sent along with this site's keys.
        policy: the floors the site holds every round to.
        run_dir: where the record of signed rounds is kept.
    """

    def __init__(
        self,
        site: Site,
        crypto: SecAggCrypto,
        *,
        sign: Signer | None = None,
        verify: Verifier | None = None,
        identity: str = "",
        certificate: bytes = b"",
        policy: SecAggPolicy | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.site = site
        self.crypto = crypto
        self.sign = sign
        self.verify = verify
        self.identity = identity
        self.certificate = certificate
        self.policy = policy or SecAggPolicy()
        self.record = SigningRecord(run_dir)
        self._round = -1
        self._digest = ""
        self._client: SecAggClient | None = None
        self._rng = np.random.default_rng()

    def answer(
        self, task: pb.Task, fetch: Callable[[], tuple[Params, str]]
    ) -> tuple[pb.SecAggReply, Params, int, dict[str, float]]:
        """``(reply, payload, num_examples, metrics)`` for one SecAgg task.

        Raises:
            ProtocolError: the request breaks the protocol or the site's policy (the
                agent declines the task and logs why).
        """
        request = secagg_codec.request_from_proto(task.secagg)
        if isinstance(request, Setup):
            return self._setup(task, request)
        client = self._client
        if client is None or self._round != task.round:
            raise ProtocolError(
                f"no secure-aggregation session for round {task.round} (this site joined or "
                "restarted mid-round, or the coordinator skipped the setup)"
            )
        reply: Any
        if isinstance(request, NeighbourKeys):
            reply = client.share(request)
        elif isinstance(request, MaskRequest):
            return self._train_and_mask(task, client, request, fetch)
        elif isinstance(request, ConsistencyRequest):
            self.record.remember(task.run_id, task.round, self._digest)  # before it leaves
            reply = client.sign_survivors(request)
        else:
            assert isinstance(request, UnmaskRequest)
            self._client = None  # one reveal per round, never two
            reply = client.unmask(request)
        return (*secagg_codec.reply_to_proto(reply), 0, {})

    def _setup(
        self, task: pb.Task, request: Setup
    ) -> tuple[pb.SecAggReply, Params, int, dict[str, float]]:
        if task.round < self._round:
            raise ProtocolError(
                f"setup for round {task.round} after round {self._round}: rounds only go forward"
            )
        self.record.check_round(task.run_id, task.round)
        # Keys and survivor-set signatures are bound to the setup's context, which the
        # coordinator writes: it must name this task's run and round (as SecureFit's does),
        # or a coordinator could reuse one round's context in a later round and replay the
        # survivor-set signatures made under it to gather a quorum for a second set.
        expected = round_context(task.run_id, task.round)
        if request.context != expected:
            raise ProtocolError(
                f"the setup's context {request.context[:80]!r} is not this task's run and round "
                f"{expected.decode()!r}: every key and signature of a round is bound to it"
            )
        self._client = None  # whatever was in flight is abandoned
        self._client = SecAggClient(
            request,
            self.crypto,
            sign=self.sign,
            verify=self.verify,
            identity=self.identity,
            certificate=self.certificate,
            policy=self.policy,
        )
        self._round, self._digest = task.round, ""
        reply = self._client.advertise(self.site.num_train_examples)
        return (*secagg_codec.reply_to_proto(reply), 0, {})

    def _train_and_mask(
        self,
        task: pb.Task,
        client: SecAggClient,
        request: MaskRequest,
        fetch: Callable[[], tuple[Params, str]],
    ) -> tuple[pb.SecAggReply, Params, int, dict[str, float]]:
        if client.stage != 2:
            raise ProtocolError(
                f"a mask request, but this round's session is at stage {client.stage + 1}"
            )
        client.policy.check_encoding(request.encoding, len(client.setup.cohort))
        start, digest = fetch()
        self.record.check_model(task.run_id, digest)
        trained, n, metrics = self.site.fit(start, task.round, dict(task.config))
        vector, clipped = encode_update(start, trained, n, request.encoding, self._rng)
        masked = client.mask(request, vector)
        self._digest = digest
        reply, payload = secagg_codec.reply_to_proto(masked)
        return reply, payload, n, {**metrics, "secagg_clipped": clipped}


def secure_identity(
    identity_key: Path | None, trusted_keys: Path | None, name: str, *, kit: Kit | None = None
) -> dict[str, Any]:
    """Keyword arguments for :class:`SecureParticipant` from the client's flags and kit.

    With ``--identity-key`` the site signs its SecAgg public keys; with
    ``--trusted-keys DIR`` (``NAME.pub`` per site) it refuses neighbours whose
    keys are not signed by a known site, so the coordinator cannot substitute keys.
    With a kit, neither is needed: the site signs with the kit's signing key and
    sends its certificate along, and trusts a neighbour's keys only with a
    certificate the consortium CA issued to a site of the name it claims (not
    revoked, if the kit holds a CRL). A flag, when given, takes the place of
    the kit for its half.
    """
    out: dict[str, Any] = {"identity": name}
    if identity_key is not None:
        out["sign"] = Identity.load(identity_key).sign
    elif kit is not None:
        signer = kit.signing_identity()
        out["sign"], out["certificate"] = signer.sign, signer.certificate
    if trusted_keys is not None:
        out["verify"] = TrustedKeys.from_dir(trusted_keys)
    elif kit is not None:
        crl = Revocation(kit.crl_path, kit.ca_cert) if kit.crl_path is not None else None
        out["verify"] = CertificateVerifier(
            kit.ca_cert, role="site", revoked=crl.is_revoked if crl is not None else None
        )
    return out

"""The agent's side of secure aggregation: one :class:`SecAggClient` per round.

The site trains at the masked-input stage, so a site that goes away while
training is simply a client that dropped after sharing its keys, which the
protocol recovers from. Every message is checked against the stage the round
is in; anything else is refused (the agent declines the task and its audit
log says why), and :class:`ContributionRecord` keeps a coordinator from
replaying a round or running a second session of it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509

from fedops.client.task_guard import run_training
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
    round_terms,
)
from fedops.core.secagg.policy import SecAggPolicy
from fedops.core.secagg.primitives import ProtocolError, SecAggCrypto, Signer, Verifier
from fedops.core.secagg.update import encode_update, vector_length
from fedops.crypto import Identity, TrustedKeys
from fedops.tasks.local_site import LocalSite
from fedops.tasks.site import DP_NUM_EXAMPLES
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import secagg as secagg_codec
from fedops.wire.training import train_of

#: a round's terms (:func:`~fedops.core.secagg.messages.round_terms`): a SHA-256
TERMS_BYTES = 32


class ContributionRecord:
    """The last round of each run this site dealt its secrets in, kept across restarts.

    A site runs one session per round, and rounds only go forward: a coordinator
    that replays a round, or sets up a second session of it, gets a refusal. The
    record is written when the site shares its keys, not when it sends its masked
    input (red team 2026-12-07): a session abandoned after that point had signed
    survivor sets, and a coordinator that ran sessions of one round until each
    gathered a quorum for another set got two sets revealed for, and one site's
    update. Kept in ``secagg_rounds.json`` in the site's run directory, written
    and fsynced before the shares leave; a file that does not read back as such
    a record refuses every secure-aggregation task, with the reason, rather than
    forget. Without a run directory, in memory only.
    """

    FILE = "secagg_rounds.json"

    def __init__(self, run_dir: Path | None) -> None:
        self.path = Path(run_dir) / self.FILE if run_dir is not None else None
        self._last: dict[str, int] = {}
        self._broken = ""
        if self.path is not None and self.path.exists():
            try:
                self._last = _read_record(self.path)
            except (OSError, ValueError) as exc:
                self._broken = (
                    f"{self.path} is not a record of contributed rounds ({exc}): refusing "
                    "secure aggregation rather than forget which rounds this site sent"
                )

    def check_round(self, run_id: str, server_round: int) -> None:
        if self._broken:
            raise ProtocolError(self._broken)
        last = self._last.get(run_id, 0)
        if server_round <= last:
            raise ProtocolError(
                f"round {server_round}: this site already dealt its secrets in round "
                f"{last} of this run; a round has one session and rounds only go forward "
                "(replay refused)"
            )

    def remember(self, run_id: str, server_round: int) -> None:
        self.check_round(run_id, server_round)
        self._last[run_id] = server_round
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(self._last, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)  # the rename itself, durable too
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _read_record(path: Path) -> dict[str, int]:
    loaded = json.loads(path.read_text())
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and type(v) is int and v >= 1 for k, v in loaded.items()
    ):
        raise ValueError("expected an object of run id -> last round (a positive integer)")
    return dict(loaded)


class SecureParticipant:
    """Answers SecAgg tasks for one site: one :class:`SecAggClient` per round, in order.

    Args:
        sign / verify / identity: the site's signing identity and its trust in
            other sites' keys (consortium mode); both ``None`` otherwise.
        certificate: what vouches for ``sign``'s key (the kit's signing
            certificate), sent along with this site's keys.
        policy: the floors the site holds every round to.
        run_dir: where the record of contributed rounds is kept (secagg_rounds.json).
    """

    def __init__(
        self,
        site: LocalSite,
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
        self.record = ContributionRecord(run_dir)
        self._round = -1
        self._client: SecAggClient | None = None

    def answer(
        self, task: pb.Task, fetch: Callable[[], Params]
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
        try:
            return self._answer(task, client, request, fetch)
        except BaseException:
            self._client = None  # a session that refused once answers nothing more
            raise

    def _answer(
        self, task: pb.Task, client: SecAggClient, request: Any, fetch: Callable[[], Params]
    ) -> tuple[pb.SecAggReply, Params, int, dict[str, float]]:
        reply: Any
        if isinstance(request, NeighbourKeys):
            if len(request.terms) != TERMS_BYTES:  # no terms: sites could each train another
                raise ProtocolError(
                    "the key request does not seal what the round's sites train (its terms): "
                    "refusing to deal secrets in a round where each site may be told otherwise"
                )
            reply = client.share(request)
            self.record.remember(task.run_id, task.round)  # fsynced before the shares leave
        elif isinstance(request, MaskRequest):
            return self._train_and_mask(task, client, request, fetch)
        elif isinstance(request, ConsistencyRequest):
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
        self._round = task.round
        # the count only sizes the grid's weight word: a site that hides its count
        # advertises the weight its local-DP answers carry
        count = DP_NUM_EXAMPLES if self.site.hides_count else self.site.num_train_examples
        reply = self._client.advertise(count)
        return (*secagg_codec.reply_to_proto(reply), 0, {})

    def _train_and_mask(
        self,
        task: pb.Task,
        client: SecAggClient,
        request: MaskRequest,
        fetch: Callable[[], Params],
    ) -> tuple[pb.SecAggReply, Params, int, dict[str, float]]:
        if client.stage != 2:
            raise ProtocolError(
                f"a mask request, but this round's session is at stage {client.stage + 1}"
            )
        train = run_training(task)
        self.site.training(train)  # the site's caps, before the download
        # what this site is asked to train, held to what the round sealed for every site
        terms = round_terms(task.model_digest, train_of(task), dict(task.config))
        start = fetch()  # verified against task.model_digest as it arrives
        # everything mask() will refuse, refused before a round is trained (and charged)
        client.check_mask_request(request, vector_length(start) - 1, terms)
        trained, n, metrics = self.site.fit(
            start, task.round, dict(task.config), run_id=task.run_id, train=train
        )
        # stochastic rounding and Skellam noise from a generator seeded afresh from the OS
        # each round (256 bits): PCG64 is no CSPRNG, so no state outlives one masked input
        rng = np.random.default_rng(secrets.randbits(256))
        vector, clipped = encode_update(start, trained, n, request.encoding, rng)
        masked = client.mask(request, vector, terms)  # encoding and terms: the sealed ones
        reply, payload = secagg_codec.reply_to_proto(masked)
        if request.encoding.private:
            # distributed DP: the noised sum is all that may leave; the site's loss, its
            # example count and whether its update was clipped are outside the mechanism
            return reply, payload, 0, {}
        return reply, payload, n, {**metrics, "secagg_clipped": clipped}


def secure_identity(
    identity_key: Path | None,
    trusted_keys: Path | None,
    name: str,
    *,
    kit: Kit | None = None,
    revoked: Callable[[x509.Certificate], bool] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for :class:`SecureParticipant` from the client's flags and kit.

    With ``--identity-key`` the site signs its SecAgg public keys; with
    ``--trusted-keys DIR`` (``NAME.pub`` per site) it refuses neighbours whose
    keys are not signed by a known site, so the coordinator cannot substitute keys.
    With a kit, neither is needed: the site signs with the kit's signing key and
    sends its certificate along, and trusts a neighbour's keys only with a
    certificate the consortium CA issued to a site of the name it claims and
    that is not revoked: ``revoked`` decides that when given (the agent passes
    the CRL the coordinator delivers, :class:`~fedops.consortium.crl.DeliveredCrl`),
    else the kit's CRL if it holds one. A flag, when given, takes the place of
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
        if revoked is None and kit.crl_path is not None:
            revoked = Revocation(kit.crl_path, kit.ca_cert).is_revoked
        out["verify"] = CertificateVerifier(kit.ca_cert, role="site", revoked=revoked)
    return out

"""The agent's side of secure aggregation: one :class:`SecAggClient` per round.

The site trains at the masked-input stage, so a site that goes away while
training is simply a client that dropped after sharing its keys, which the
protocol recovers from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedops.consortium.kit import Kit
from fedops.consortium.signing import CertificateVerifier
from fedops.consortium.tls import Revocation
from fedops.core.params import Params
from fedops.core.secagg.client import SecAggClient
from fedops.core.secagg.messages import MaskRequest, NeighbourKeys, Setup, UnmaskRequest
from fedops.core.secagg.primitives import ProtocolError, SecAggCrypto, Signer, Verifier
from fedops.core.secagg.update import encode_update
from fedops.crypto import Identity, TrustedKeys
from fedops.tasks.site import Site
from fedops.v1 import fedops_pb2 as pb
from fedops.wire import secagg as secagg_codec


class SecureParticipant:
    """Answers SecAgg tasks for one site.

    Args:
        sign / verify / identity: the site's signing identity and its trust in
            other sites' keys (consortium mode); both ``None`` otherwise.
        certificate: what vouches for ``sign``'s key (the kit's signing
            certificate), sent along with this site's keys.
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
    ) -> None:
        self.site = site
        self.crypto = crypto
        self.sign = sign
        self.verify = verify
        self.identity = identity
        self.certificate = certificate
        self._round = -1
        self._client: SecAggClient | None = None
        self._rng = np.random.default_rng()

    def answer(
        self, task: pb.Task, fetch: Callable[[], Params]
    ) -> tuple[pb.SecAggReply, Params, int, dict[str, float]]:
        """``(reply, payload, num_examples, metrics)`` for one SecAgg task.

        Raises:
            ProtocolError: the request breaks the protocol (the agent declines the task).
        """
        request = secagg_codec.request_from_proto(task.secagg)
        if isinstance(request, Setup):
            self._client = SecAggClient(
                request,
                self.crypto,
                sign=self.sign,
                verify=self.verify,
                identity=self.identity,
                certificate=self.certificate,
            )
            self._round = task.round
            reply: Any = self._client.advertise(self.site.num_train_examples)
            return (*secagg_codec.reply_to_proto(reply), 0, {})
        client = self._client
        if client is None or self._round != task.round:
            raise ProtocolError(
                f"no secure-aggregation session for round {task.round} (this site joined or "
                "restarted mid-round)"
            )
        if isinstance(request, NeighbourKeys):
            return (*secagg_codec.reply_to_proto(client.share(request)), 0, {})
        if isinstance(request, MaskRequest):
            return self._train_and_mask(task, client, request, fetch)
        assert isinstance(request, UnmaskRequest)
        self._client = None  # one reveal per round, never two
        return (*secagg_codec.reply_to_proto(client.unmask(request)), 0, {})

    def _train_and_mask(
        self,
        task: pb.Task,
        client: SecAggClient,
        request: MaskRequest,
        fetch: Callable[[], Params],
    ) -> tuple[pb.SecAggReply, Params, int, dict[str, float]]:
        start = fetch()
        trained, n, metrics = self.site.fit(start, task.round, dict(task.config))
        vector, clipped = encode_update(start, trained, n, request.encoding, self._rng)
        masked = client.mask(request, vector)
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

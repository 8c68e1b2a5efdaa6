"""SecAgg+ (Bell et al. 2020) as pure state machines: the coordinator learns only the sum.

``graph`` picks each client's neighbours, ``shamir`` shares the secrets that
let the server unmask past dropouts, ``quantize`` and ``update`` turn model
updates into integers in Z_2^32, ``client`` and ``server`` are the protocol,
``policy`` the floors a site holds every round to. Key agreement, encryption
and the PRG are injected (:class:`SecAggCrypto`), so this package stays free
of I/O and of the crypto library.

Threat model (the README's "Threat model" section says it at length; every
claim is tested in ``tests/unit/core/secagg`` and ``tests/adversary``):

* The coordinator may be malicious: any message, any order, different views
  to different sites, extreme parameters, replays. Up to ``c`` sites collude
  with it; sites have identities (signed keys) and pin ``2t >= k + c + 1``.
* It must never rebuild an honest site's update; it learns the sum of the
  survivors, at least the sites' ``min_cohort`` of them and at least the
  ``min_survivors`` sealed into the round's encoding (no honest site signs a
  smaller set, so none reveals for one). The consistency
  check (Bonawitz et al. 2017, Fig. 4) makes every honest revealer act on one
  survivor set: a site reveals only once ``⌊(m + c)/2⌋ + 1`` of the round's
  committee (its first ``m`` sites) signed the set it signed, and two sets
  cannot both reach that, whatever the committee. Each site
  derives its neighbours itself from a hash of the round
  (:func:`graph.graph_seed`), so the coordinator picks neither.
* In clear: example counts (coordinator only), losses, evaluation metrics.
* A malicious site can bias the sum (inputs are hidden, not validated) and
  spoil a round, but not the run: its complaints exclude itself; shares it
  deals badly exclude the honest neighbours that complain (or abort the round),
  and the server counts who is accused (``SecAggServer.accused``: the round
  names them); a malformed sum aborts one round.
* Out of scope: a coordinator that drops honest sites down to the floor;
  without identities, a malicious coordinator (it could pose as every site).
"""

from fedops.core.secagg.primitives import ProtocolError, SecAggAborted, SecAggCrypto

__all__ = ["ProtocolError", "SecAggAborted", "SecAggCrypto"]

"""SecAgg+ (Bell et al. 2020) as pure state machines: the coordinator learns only the sum.

``graph`` picks each client's neighbours, ``shamir`` shares the secrets that
let the server unmask past dropouts, ``quantize`` and ``update`` turn model
updates into integers in Z_2^32, ``client`` and ``server`` are the protocol.
Key agreement, encryption and the PRG are injected (:class:`SecAggCrypto`),
so this package stays free of I/O and of the crypto library.
"""

from fedops.core.secagg.primitives import ProtocolError, SecAggAborted, SecAggCrypto

__all__ = ["ProtocolError", "SecAggAborted", "SecAggCrypto"]

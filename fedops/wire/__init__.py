"""The wire layer: protocol version, array codec, chunk framing."""

#: sent at registration; a coordinator refuses any other. Raised whenever a peer of the
#: previous version would fail mid-round instead (v1.1: 36-byte SecAgg+ shares over
#: GF(2^31 - 1), the CRL with tasks; v1.2: shares dealt with their owners' digests).
PROTOCOL_VERSION = "fedops.v1.2"

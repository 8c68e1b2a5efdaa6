"""The wire layer: protocol version, array codec, chunk framing."""

#: sent at registration; a coordinator refuses any other. Raised whenever a peer of the
#: previous version would fail mid-round instead (v1.1: SecAgg+ shares are 36 bytes over
#: GF(2^31 - 1), dealt with their owners' digests; the coordinator sends its CRL with tasks).
PROTOCOL_VERSION = "fedops.v1.1"

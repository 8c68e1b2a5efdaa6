"""The wire layer: protocol version, array codec, chunk framing."""

#: sent at registration; a coordinator refuses any other
PROTOCOL_VERSION = "fedops.v1"

"""How an agent dials its coordinator: mTLS with a kit, loud plaintext without one."""

from __future__ import annotations

import logging

import grpc

from fedops.consortium.kit import Kit
from fedops.consortium.tls import channel_credentials

log = logging.getLogger("fedops.client")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: client keepalive ping period; the coordinator allows pings this often (its server options)
KEEPALIVE_MS = 20_000

INSECURE_WARNING = (
    "WARNING: dialing %s over plaintext gRPC (no TLS, no certificate): anyone on the path can "
    "read and alter this site's updates. Use a consortium kit (--kit) outside local development."
)

OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    # its own connection even when several agents share a process (tests, load
    # benchmarks), as separate sites would; gRPC otherwise shares one per address
    ("grpc.use_local_subchannel_pool", 1),
    # a connection that died silently (a NAT or firewall dropping its state) fails
    # the call in ~30 s, and the agent reconnects, instead of hanging until a deadline
    ("grpc.keepalive_time_ms", KEEPALIVE_MS),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


def dial(address: str, kit: Kit | None) -> grpc.Channel:
    """A channel to the coordinator; with a kit its certificate is this site's identity."""
    if kit is not None:
        return grpc.secure_channel(address, channel_credentials(kit), options=OPTIONS)
    log.warning(INSECURE_WARNING, address)
    return grpc.insecure_channel(address, options=OPTIONS)

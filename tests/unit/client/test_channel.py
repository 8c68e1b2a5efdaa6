"""How an agent dials its coordinator (:mod:`fedops.client.channel`).

Under test: without a kit the channel is plaintext and says so loudly, naming
the address; the channel options allow the payload chunks through and give
each agent its own connection with keepalive pings the coordinator accepts.
"""

from __future__ import annotations

import logging

import pytest

from fedops.client.channel import INSECURE_WARNING, KEEPALIVE_MS, MAX_MESSAGE_BYTES, OPTIONS, dial
from fedops.wire import codec


def test_dialing_without_a_kit_warns_that_the_channel_is_plaintext(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedops.client"):
        channel = dial("127.0.0.1:1", None)
    channel.close()
    (record,) = [r for r in caplog.records if r.name == "fedops.client"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == INSECURE_WARNING % "127.0.0.1:1"
    assert "over plaintext gRPC" in record.getMessage() and "--kit" in record.getMessage()


def test_the_options_fit_the_payload_chunks_and_keep_the_connection_alive() -> None:
    options = dict(OPTIONS)
    assert len(options) == len(OPTIONS)  # no option given twice
    assert options["grpc.max_receive_message_length"] == MAX_MESSAGE_BYTES
    assert options["grpc.max_send_message_length"] == MAX_MESSAGE_BYTES
    assert MAX_MESSAGE_BYTES > codec.DEFAULT_CHUNK_BYTES  # a chunk and its framing fit
    assert options["grpc.use_local_subchannel_pool"] == 1
    assert options["grpc.keepalive_time_ms"] == KEEPALIVE_MS
    assert options["grpc.keepalive_timeout_ms"] < KEEPALIVE_MS

"""The wire layer: protocol version, array codec, chunk framing."""

#: sent at registration; a coordinator refuses any other. Raised whenever a peer of the
#: previous version would fail mid-round instead (v1.1: 36-byte SecAgg+ shares over
#: GF(2^31 - 1), the CRL with tasks; v1.2: shares dealt with their owners' digests; v1.3:
#: training tasks carry the run's training settings, Task.train, which a site requires;
#: v1.4: model digests are BLAKE3, "blake3:<hex>", fedops.core.model_hash; v1.5: SecAgg+
#: pairwise secrets bind the pair's indices, fedops.core.secagg.client.pair_info, and the
#: key request seals what every site trains, SecAggNeighbourKeys.terms).
PROTOCOL_VERSION = "fedops.v1.5"

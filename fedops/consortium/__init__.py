"""Consortium provisioning: a CA, one startup kit per party, mTLS for gRPC, revocation.

``spec`` reads ``consortium.yaml``; ``pki`` is the X.509 (the only place
besides :mod:`fedops.crypto` that uses ``cryptography``); ``kits`` writes
and verifies startup kits; ``tls`` turns a kit into gRPC credentials and a
caller's certificate into an identity; ``commands`` is what the CLI calls.
"""

"""Consortium provisioning: a CA, one startup kit per party, mTLS for gRPC, revocation.

This package and :mod:`fedops.crypto` are the only users of ``cryptography``.
``spec`` reads ``consortium.yaml``; ``pki`` is the X.509; ``kits`` writes and
``kit`` verifies startup kits; ``signing`` issues and checks each party's
Ed25519 signing certificate (audit logs, SecAgg keys); ``tls`` turns a kit
into gRPC credentials and a caller's certificate into an identity;
``commands`` is what the CLI calls.
"""

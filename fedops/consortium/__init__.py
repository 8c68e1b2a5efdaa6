"""Consortium provisioning: a CA, one startup kit per party, mTLS for gRPC, revocation.

Threat model. The CA's operator may also be the coordinator's operator, so
it must not hold the keys that let it pose as a site: a party's private keys
are made at the party and never leave it (enrolment by CSR, :mod:`enrol`;
kits with keys made at the CA are demo kits, made only when asked). Whoever
can write a kit folder may replace it whole (a new CA, a manifest that CA
re-signed): only a CA fingerprint got out of band and passed in from outside
the folder (``--ca-fingerprint``) refuses that, so kits record the pin they
were enrolled with and every loader takes one. Whoever can write the CRL's
file may put back an old, genuine CRL: :mod:`crl` refuses one past its
``next_update`` or older than the highest CRL number already accepted.

This package and :mod:`fedops.crypto` are the only users of ``cryptography``.
``spec`` reads ``consortium.yaml``; ``pki`` is the X.509; ``ca`` is the CA's
folder; ``kits`` writes demo kits and revokes; ``enrol`` is the CSR path
(request, sign, assemble); ``kit`` verifies startup kits; ``crl`` checks a
CRL is current; ``signing`` issues and checks each party's Ed25519 signing
certificate (audit logs, SecAgg keys); ``tls`` turns a kit into gRPC
credentials and a caller's certificate into an identity; ``commands`` is
what the CLI calls.
"""

"""Model digests: BLAKE3, named in the digest, and the bare SHA-256 of older run directories.

Threat model: whoever holds a digest (a site checking the model it downloaded, an auditor
checking a checkpoint against the audit log) must not accept a model other than the one
hashed. So a digest is recomputed in the algorithm it names, and a digest that names an
algorithm fedops does not read, or is not hex of the right length, is refused, never
treated as "nothing to check".
"""

from __future__ import annotations

import hashlib

import blake3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.core.model_hash import MODEL_HASH, UnknownDigest, hash_named, shortened
from fedops.core.params import digest, digest_header, digest_matches, le_bytes, specs_of


def _params(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.normal(size=(n, 3)).astype(np.float32),
        "b": rng.normal(size=n),
        "steps": np.array([seed, n], dtype=np.int64),
    }


def _bytes(params: dict[str, np.ndarray]) -> bytes:
    return digest_header(specs_of(params)) + b"".join(bytes(le_bytes(a)) for a in params.values())


def test_the_hash_is_blake3_by_its_published_test_vector():
    # BLAKE3's reference test vector for the empty input (github.com/BLAKE3-team/BLAKE3)
    empty = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert blake3.blake3(b"").hexdigest() == empty
    assert MODEL_HASH == "blake3"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(0, 40))
def test_a_digest_is_blake3_of_the_header_and_the_bytes_and_names_it(seed, n):
    params = _params(seed, n)
    assert digest(params) == "blake3:" + blake3.blake3(_bytes(params)).hexdigest()
    assert digest_matches(params, digest(params))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 40), flip=st.integers(0, 10_000))
def test_a_bare_sha256_digest_from_an_older_run_still_verifies_and_still_binds(seed, n, flip):
    params = _params(seed, n)
    legacy = hashlib.sha256(_bytes(params)).hexdigest()
    assert digest(params, "sha256") == legacy  # bare: as runs before fedops.v1.4 wrote it
    assert digest_matches(params, legacy)
    changed = {k: v.copy() for k, v in params.items()}
    w = changed["w"].reshape(-1).view(np.uint8)
    w[flip % len(w)] ^= 0x01
    assert not digest_matches(changed, legacy)
    assert not digest_matches(changed, digest(params))


@pytest.mark.parametrize(
    "recorded",
    [
        "",
        "blake3:",
        "blake3:" + "a" * 63,
        "blake3:" + "a" * 65,
        "blake3:" + "A" * 64,  # hex is written lowercase
        "blake3:" + "g" * 64,
        "sha256:" + "a" * 64,  # SHA-256 digests were written bare, never prefixed
        "md5:" + "a" * 64,
        "none:" + "a" * 64,
        "a" * 63,
        "blake3:blake3:" + "a" * 64,
        "x" * 10_000,
    ],
)
def test_a_digest_fedops_does_not_read_is_refused_not_skipped(recorded):
    with pytest.raises(UnknownDigest, match="is not a model digest fedops reads") as info:
        hash_named(recorded)
    assert len(str(info.value)) < 300  # a hostile value is shown cut short
    with pytest.raises(UnknownDigest):
        digest_matches(_params(0, 2), recorded)


def test_the_names_fedops_reads():
    assert hash_named("blake3:" + "0" * 64) == "blake3"
    assert hash_named("0" * 64) == "sha256"


@pytest.mark.parametrize("recorded", [b"blake3:" + b"0" * 64, 7, None, 1.5])
def test_a_recorded_digest_that_is_not_text_is_refused(recorded):
    with pytest.raises(UnknownDigest, match="is not a model digest fedops reads"):
        hash_named(recorded)  # type: ignore[arg-type]


def test_a_shortened_digest_keeps_its_name_and_sixteen_hex_digits():
    hex_value = "0123456789abcdef" * 4
    assert shortened("blake3:" + hex_value) == "blake3:0123456789abcdef…"
    assert shortened(hex_value) == "0123456789abcdef…"
    assert shortened("blake3:01") == "blake3:01"

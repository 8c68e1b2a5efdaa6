"""What a round's sites train, sealed into the round (round_terms, red team 2026-12-07)."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from fedops.core.secagg.messages import round_terms
from fedops.core.train_settings import TrainSettings

RUN = TrainSettings(epochs=1, batch_size=32, lr=0.1)


def test_any_difference_in_what_is_trained_changes_the_terms():
    base = round_terms("blake3:aa", RUN, {"seed": 7.0, "proximal_mu": 0.01})
    assert len(base) == 32
    others = [
        round_terms("blake3:ab", RUN, {"seed": 7.0, "proximal_mu": 0.01}),  # another model
        round_terms(
            "blake3:aa", dataclasses.replace(RUN, lr=1e-30), {"seed": 7.0, "proximal_mu": 0.01}
        ),
        round_terms(
            "blake3:aa", dataclasses.replace(RUN, epochs=2), {"seed": 7.0, "proximal_mu": 0.01}
        ),
        round_terms(
            "blake3:aa", dataclasses.replace(RUN, momentum=0.9), {"seed": 7.0, "proximal_mu": 0.01}
        ),
        round_terms("blake3:aa", RUN, {"seed": 7.0}),  # a config key dropped
        round_terms("blake3:aa", RUN, {"seed": 7.0, "proximal_mu": 0.0}),
        round_terms("blake3:aa", None, {"seed": 7.0, "proximal_mu": 0.01}),
    ]
    assert len({base, *others}) == len(others) + 1


def test_the_same_round_gives_the_same_terms_however_it_travelled():
    """The coordinator hashes its settings; the site what the wire gave it: ints as floats,
    the config in another order."""
    a = round_terms("blake3:aa", RUN, {"seed": 7, "proximal_mu": 0.01})
    b = round_terms("blake3:aa", dataclasses.replace(RUN), {"proximal_mu": 0.01, "seed": 7.0})
    assert a == b


@given(
    st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False), max_size=4),
    st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False), max_size=4),
)
def test_different_configs_never_share_terms(one: dict[str, float], two: dict[str, float]):
    """JSON, not joined text: a key holding a separator cannot make two configs alike."""
    same = {k: float(v).hex() for k, v in one.items()} == {
        k: float(v).hex() for k, v in two.items()
    }
    assert (round_terms("m", RUN, one) == round_terms("m", RUN, two)) == same


def test_a_key_with_separators_does_not_collide():
    assert round_terms("m", RUN, {"a": 1.0, "b": 2.0}) != round_terms(
        "m", RUN, {"a=0x1.0000000000000p+0\nb": 2.0}
    )

"""The secure mean moves no value further than the clip: a lying site cannot wreck the model."""

from __future__ import annotations

import numpy as np

from fedops.runtime.secure_fit import bounded


def test_steps_beyond_the_clip_are_clamped_and_the_model_stays_finite():
    start = {"w": np.zeros(4, np.float32), "h": np.ones(3, np.float16), "n": np.arange(2)}
    mean = {
        "w": np.array([0.5, -3.0, 1.4e7, -np.inf]),
        "h": np.array([1.0, 7e4, np.nan]),
        "n": np.array([0.4, 9.0]),
    }
    out = bounded(start, mean, clip=1.0)
    assert out["w"].tolist() == [0.5, -1.0, 1.0, -1.0] and out["w"].dtype == np.float32
    assert out["h"].dtype == np.float16 and np.all(np.isfinite(out["h"]))
    assert out["h"].tolist() == [1.0, 2.0, 1.0]  # a NaN does not move its value
    assert out["n"].tolist() == [0, 2] and out["n"].dtype == start["n"].dtype


def test_an_honest_mean_within_the_clip_is_unchanged():
    rng = np.random.default_rng(0)
    start = {"w": rng.normal(size=50).astype(np.float32)}
    mean = {"w": start["w"] + rng.uniform(-0.9, 0.9, 50)}
    assert np.array_equal(bounded(start, mean, clip=1.0)["w"], mean["w"].astype(np.float32))

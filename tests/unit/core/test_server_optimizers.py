"""FedAvgM, FedAdagrad, FedAdam and FedYogi: the update rules, their state, their settings.

The expected models come from a reference written here, coordinate by coordinate
with Python floats, from the formulas (Reddi et al. 2021, Algorithm 2; Hsu et al.
2019), not from the implementation: v starts at tau^2, m and the momentum at 0, no
bias correction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedops.cli.configs import config_of as _config
from fedops.cli.parser import build_parser
from fedops.config.hydra_app import compose_settings
from fedops.core.results import FitResult
from fedops.core.strategies import (
    STRATEGIES,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    StatefulStrategy,
    load_strategy_state,
    strategy_state,
)
from fedops.runtime.rules import ConfigError
from fedops.runtime.run import make_strategy
from fedops.runtime.schema import StrategyConfig, flag_of
from fedops.runtime.simulate_settings import validate

Opt = FedAvgM | FedAdagrad | FedAdam | FedYogi

# ---- a reference, one coordinate at a time ---------------------------------------------


def _sign(x: float) -> float:
    return 0.0 if x == 0 else math.copysign(1.0, x)


def _reference(kind: str, hp: dict[str, float], x0: float, means: Sequence[float]) -> list[float]:
    """The model after each round, from the formulas, for one coordinate whose weighted
    client mean is ``means[t]`` in round ``t``."""
    lr, x, m, out = hp["server_lr"], x0, 0.0, []
    v = hp.get("tau", 0.0) ** 2
    for mean in means:
        d = mean - x
        if kind == "fedavgm":
            m = hp["momentum"] * m + d
            x = x + lr * m
        else:
            m = hp["beta1"] * m + (1 - hp["beta1"]) * d
            if kind == "fedadagrad":
                v = v + d * d
            elif kind == "fedadam":
                v = hp["beta2"] * v + (1 - hp["beta2"]) * d * d
            else:
                v = v - (1 - hp["beta2"]) * d * d * _sign(v - d * d)
            x = x + lr * m / (math.sqrt(v) + hp["tau"])
        out.append(x)
    return out


HYPER: dict[str, dict[str, float]] = {
    "fedavgm": {"server_lr": 0.7, "momentum": 0.6},
    "fedadagrad": {"server_lr": 0.3, "beta1": 0.8, "tau": 0.05},
    "fedadam": {"server_lr": 0.2, "beta1": 0.7, "beta2": 0.9, "tau": 0.01},
    "fedyogi": {"server_lr": 0.2, "beta1": 0.7, "beta2": 0.9, "tau": 0.01},
}
CLASSES: dict[str, type[Opt]] = {
    "fedavgm": FedAvgM,
    "fedadagrad": FedAdagrad,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
}


def _make(kind: str, hp: dict[str, float] | None = None) -> Opt:
    hp = HYPER[kind] if hp is None else hp
    if kind == "fedavgm":
        return FedAvgM(server_lr=hp["server_lr"], momentum=hp["momentum"])
    return CLASSES[kind](**hp)  # type: ignore[arg-type]


# three rounds of three clients (num_examples 1, 2, 5) on a float32 matrix and a float64 vector
X0 = {"w": np.array([[0.5, -1.0], [2.0, 0.0]], np.float32), "b": np.array([0.1, 0.2, -0.3])}
NUM_EXAMPLES = (1, 2, 5)
CLIENTS = [
    [
        {"w": np.array([[1.0, 0.0], [2.0, 3.0]]), "b": np.array([0.0, 1.0, 1.0])},
        {"w": np.array([[0.0, -2.0], [2.5, 1.0]]), "b": np.array([0.5, 0.0, -1.0])},
        {"w": np.array([[2.0, -1.0], [1.0, -1.0]]), "b": np.array([0.2, 0.4, 0.0])},
    ],
    [
        {"w": np.array([[0.7, 0.3], [1.0, 1.0]]), "b": np.array([1.0, 1.0, 1.0])},
        {"w": np.array([[0.8, 0.1], [3.0, 0.5]]), "b": np.array([0.0, 0.5, -0.5])},
        {"w": np.array([[0.9, -0.4], [2.0, 0.0]]), "b": np.array([0.3, 0.3, 0.3])},
    ],
    [
        {"w": np.array([[-1.0, 1.0], [0.0, 2.0]]), "b": np.array([2.0, 0.0, 0.0])},
        {"w": np.array([[0.0, 0.0], [0.0, 0.0]]), "b": np.array([0.0, 2.0, 0.0])},
        {"w": np.array([[0.5, 0.5], [2.0, 0.1]]), "b": np.array([0.0, 0.0, 2.0])},
    ],
]


def _results(rnd: int) -> list[FitResult]:
    return [
        FitResult(
            node_id=f"c{i}",
            params={"w": p["w"].astype(np.float32), "b": p["b"].astype(np.float64)},
            num_examples=n,
        )
        for i, (p, n) in enumerate(zip(CLIENTS[rnd], NUM_EXAMPLES, strict=True))
    ]


def _weighted_mean(rnd: int, name: str) -> np.ndarray:
    total = sum(NUM_EXAMPLES)
    return sum(
        (p[name].astype(X0[name].dtype).astype(np.float64) * n / total)
        for p, n in zip(CLIENTS[rnd], NUM_EXAMPLES, strict=True)
    )  # type: ignore[return-value]


def _run(strategy: Opt, rounds: range, params: dict[str, np.ndarray]) -> list[dict]:
    out = []
    for rnd in rounds:
        params = strategy.aggregate_fit(rnd + 1, params, _results(rnd))
        out.append(params)
    return out


# ---- the update rules ------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_three_rounds_follow_the_update_rule(kind: str):
    got = _run(_make(kind), range(3), X0)
    for name, x0 in X0.items():
        means = [_weighted_mean(rnd, name) for rnd in range(3)]
        whole = [
            _reference(kind, HYPER[kind], float(x0[idx]), [float(m[idx]) for m in means])
            for idx in np.ndindex(x0.shape)
        ]
        for rnd in range(3):
            ours = got[rnd][name]
            assert ours.dtype == x0.dtype and ours.shape == x0.shape
            ref = np.array([w[rnd] for w in whole]).reshape(x0.shape)
            tol = 1e-5 if x0.dtype == np.float32 else 1e-12
            np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        # tau = 1, v_{-1} = 1, delta = 2 (delta^2 = 4), beta1 = 0 so m = delta
        (FedAdagrad(server_lr=1.0, beta1=0.0, tau=1.0), 2 / (math.sqrt(5) + 1)),  # v = 1 + 4
        (FedAdam(server_lr=1.0, beta1=0.0, beta2=0.5, tau=1.0), 2 / (math.sqrt(2.5) + 1)),
        (FedYogi(server_lr=1.0, beta1=0.0, beta2=0.5, tau=1.0), math.sqrt(3) - 1),  # v = 1 + 2
    ],
    ids=["fedadagrad", "fedadam", "fedyogi"],
)
def test_a_first_round_computed_by_hand(strategy: Opt, expected: float):
    one = [FitResult(node_id="a", params={"w": np.array([2.0])}, num_examples=3)]
    out = strategy.aggregate_fit(1, {"w": np.array([0.0])}, one)
    assert out["w"][0] == pytest.approx(expected, rel=1e-12)


def test_fedavgm_by_hand():
    """u: 2, 0.5*2 + 0 = 1, 0.5*1 + (2 - 3) = -0.5; x: 2, 3, 2.5."""
    strategy, x = FedAvgM(momentum=0.5), {"w": np.array([0.0])}
    seen = []
    for rnd in (1, 2, 3):
        x = strategy.aggregate_fit(
            rnd, x, [FitResult(node_id="a", params={"w": np.array([2.0])}, num_examples=1)]
        )
        seen.append(float(x["w"][0]))
    assert seen == [2.0, 3.0, 2.5]


def test_yogis_v_moves_towards_delta_squared_by_a_fixed_step():
    """From v = tau^2 = 1 a delta of 0.5 (delta^2 = 0.25 < v) lowers v by (1 - b2) * 0.25."""
    strategy = FedYogi(server_lr=1.0, beta1=0.0, beta2=0.5, tau=1.0)
    strategy.aggregate_fit(
        1,
        {"w": np.array([0.0])},
        [FitResult(node_id="a", params={"w": np.array([0.5])}, num_examples=1)],
    )
    assert strategy.state()["v.w"][0] == pytest.approx(1 - 0.5 * 0.25)


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_updates_are_weighted_by_num_examples(kind: str):
    x = {"w": np.array([0.0, 1.0])}
    two = [
        FitResult(node_id="a", params={"w": np.array([4.0, 0.0])}, num_examples=1),
        FitResult(node_id="b", params={"w": np.array([0.0, 4.0])}, num_examples=3),
    ]
    mean = [FitResult(node_id="m", params={"w": np.array([1.0, 3.0])}, num_examples=7)]
    unweighted = [FitResult(node_id="u", params={"w": np.array([2.0, 2.0])}, num_examples=1)]
    weighted = _make(kind).aggregate_fit(1, x, two)["w"]
    np.testing.assert_allclose(weighted, _make(kind).aggregate_fit(1, x, mean)["w"], rtol=1e-12)
    assert not np.allclose(weighted, _make(kind).aggregate_fit(1, x, unweighted)["w"])


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_integer_tensors_take_the_rounded_mean_and_keep_no_state(kind: str):
    results = [
        FitResult(node_id=n, params={"w": np.array([1.0]), "steps": np.array([s])}, num_examples=1)
        for n, s in (("a", 4), ("b", 7))
    ]
    strategy = _make(kind)
    out = strategy.aggregate_fit(1, {"w": np.array([0.0]), "steps": np.array([0])}, results)
    assert out["steps"].dtype == np.array([0]).dtype and out["steps"][0] == 6  # rint(5.5)
    assert list(out) == ["w", "steps"]
    assert not any(key.endswith(".steps") for key in strategy.state())


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_a_round_without_results_changes_neither_model_nor_state(kind: str):
    strategy = _make(kind)
    _run(strategy, range(1), X0)
    before = strategy.state()
    assert strategy.aggregate_fit(2, X0, []) is X0
    after = strategy.state()
    assert before.keys() == after.keys() and int(after["step"]) == 1
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_fedavgm_without_momentum_is_fedavg():
    ours = FedAvgM(momentum=0.0, server_lr=0.5).aggregate_fit(1, X0, _results(0))
    theirs = FedAvg(server_lr=0.5).aggregate_fit(1, X0, _results(0))
    for name in X0:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6)


# ---- state -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_a_loaded_state_continues_exactly_as_an_uninterrupted_run(kind: str):
    uninterrupted = _run(_make(kind), range(3), X0)
    first = _make(kind)
    two = _run(first, range(2), X0)
    state = first.state()
    kinds = ("m",) if kind == "fedavgm" else ("m", "v")
    assert set(state) == {f"{k}.{n}" for k in kinds for n in X0} | {"step"}
    assert state["step"].shape == () and state["step"].dtype.kind == "i" and state["step"] == 2
    assert all(state[f"{k}.w"].shape == (2, 2) for k in kinds)
    resumed = _make(kind)
    resumed.load_state(state)
    third = resumed.aggregate_fit(3, two[-1], _results(2))
    for name in X0:
        np.testing.assert_array_equal(third[name], uninterrupted[2][name])
    assert int(resumed.state()["step"]) == 3


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_state_hands_out_copies(kind: str):
    strategy = _make(kind)
    _run(strategy, range(1), X0)
    state = strategy.state()
    state["m.w"][...] = 99.0
    assert not np.any(strategy.state()["m.w"] == 99.0)
    strategy.load_state(state)
    state["m.w"][...] = 0.0
    assert np.all(strategy.state()["m.w"] == 99.0)


@pytest.mark.parametrize("kind", sorted(CLASSES))
def test_a_fresh_strategy_has_a_zero_step_and_loads_the_empty_state(kind: str):
    strategy = _make(kind)
    assert strategy.state() == {"step": np.array(0)}
    _run(strategy, range(1), X0)
    strategy.load_state({})  # start afresh
    assert set(strategy.state()) == {"step"}
    np.testing.assert_array_equal(
        strategy.aggregate_fit(1, X0, _results(0))["w"], _run(_make(kind), range(1), X0)[0]["w"]
    )


def _adam_state() -> dict[str, np.ndarray]:
    strategy = FedAdam()
    _run(strategy, range(2), X0)
    return strategy.state()


def _with(**changes: np.ndarray | None) -> dict[str, np.ndarray]:
    state = _adam_state()
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


BAD_STATES: list[tuple[str, Callable[[], dict[str, np.ndarray]], str]] = [
    ("unknown prefix", lambda: _with(x__w=np.zeros((2, 2))), "unknown entry 'x.w'"),
    ("no parameter name", lambda: _with(m=np.zeros(1)), "unknown entry 'm'"),
    ("no step", lambda: _with(step=None), "no 'step'"),
    ("step not 0-d", lambda: _with(step=np.array([2])), "'step' must be a 0-d integer"),
    ("float step", lambda: _with(step=np.array(2.0)), "'step' must be a 0-d integer"),
    ("negative step", lambda: _with(step=np.array(-1)), "'step' must be a 0-d integer"),
    ("v missing", lambda: _with(v__w=None), "differ on tensors ['w']"),
    ("m extra", lambda: _with(m__c=np.zeros(3)), "differ on tensors ['c']"),
    ("shapes differ", lambda: _with(v__w=np.ones((4,))), "v.w has shape (4,), m.w has (2, 2)"),
    ("integer buffer", lambda: _with(m__b=np.zeros(3, np.int64)), "'m.b' must be floating"),
    ("nan", lambda: _with(m__b=np.array([0.0, np.nan, 0.0])), "'m.b' has non-finite"),
    ("negative v", lambda: _with(v__b=np.array([1.0, -1.0, 0.0])), "'v.b' is a second moment"),
]


@pytest.mark.parametrize(
    ("bad", "words"),
    [(make, words) for _, make, words in BAD_STATES],
    ids=[i for i, *_ in BAD_STATES],
)
def test_load_state_refuses_a_malformed_state_and_changes_nothing(bad, words: str):
    strategy = FedAdam()
    _run(strategy, range(1), X0)
    before = strategy.state()
    with pytest.raises(ValueError, match="fedadam state") as refused:
        strategy.load_state(bad())
    assert words in str(refused.value)
    after = strategy.state()
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_fedavgm_refuses_a_fedadam_state():
    with pytest.raises(ValueError, match=r"fedavgm state has an unknown entry 'v\."):
        FedAvgM().load_state(_adam_state())


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (
            {"w": np.zeros(4, np.float32), "b": np.zeros(3)},
            "m.w has shape (2, 2), the tensor has (4,)",
        ),
        ({"w": np.zeros((2, 2), np.float32)}, "the model lacks ['b']"),
        ({**X0, "c": np.zeros(1)}, "missing for ['c']"),
    ],
)
def test_a_state_that_does_not_fit_the_model_is_refused_before_any_change(model, words: str):
    strategy = FedAdam()
    strategy.load_state(_adam_state())
    before = strategy.state()
    results = [FitResult(node_id="a", params=model, num_examples=1)]
    with pytest.raises(ValueError, match="fedadam state does not fit the model") as refused:
        strategy.aggregate_fit(3, model, results)
    assert words in str(refused.value)
    for key, value in strategy.state().items():
        np.testing.assert_array_equal(value, before[key])


def test_stateless_strategies_have_the_empty_state():
    assert strategy_state(FedAvg()) == {}
    load_strategy_state(FedAvg(), {})
    with pytest.raises(ValueError, match="'fedavg' keeps no state"):
        load_strategy_state(FedAvg(), {"step": np.array(1)})
    adam = FedAdam()
    assert isinstance(adam, StatefulStrategy) and not isinstance(FedAvg(), StatefulStrategy)
    load_strategy_state(adam, _adam_state())
    assert int(strategy_state(adam)["step"]) == 2


def test_equality_is_by_hyperparameters_not_state():
    used = FedAdam()
    _run(used, range(1), X0)
    assert used == FedAdam() and used != FedAdam(beta2=0.9)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(sorted(CLASSES)),
    split=st.integers(0, 4),
    updates=st.lists(
        st.tuples(
            st.lists(st.floats(-10, 10), min_size=3, max_size=3),
            st.lists(st.floats(-10, 10), min_size=3, max_size=3),
            st.integers(1, 50),
            st.integers(1, 50),
        ),
        min_size=4,
        max_size=4,
    ),
)
def test_stopping_and_resuming_anywhere_changes_nothing(kind, split, updates):
    def rounds(strategy: Opt, x: dict, todo: list) -> dict:
        for a, b, na, nb in todo:
            results = [
                FitResult(node_id="a", params={"w": np.array(a)}, num_examples=na),
                FitResult(node_id="b", params={"w": np.array(b)}, num_examples=nb),
            ]
            x = strategy.aggregate_fit(1, x, results)
        return x

    start = {"w": np.zeros(3)}
    whole = rounds(_make(kind), start, updates)
    first = _make(kind)
    middle = rounds(first, start, updates[:split])
    second = _make(kind)
    second.load_state({k: v.copy() for k, v in first.state().items()})
    np.testing.assert_array_equal(rounds(second, middle, updates[split:])["w"], whole["w"])
    assert np.all(np.isfinite(whole["w"]))


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["fedadagrad", "fedadam", "fedyogi"]),
    deltas=st.lists(st.floats(-100, 100), min_size=1, max_size=6),
)
def test_an_adaptive_step_is_at_most_lr_over_sqrt_one_minus_beta2_per_coordinate(kind, deltas):
    """With beta1 = 0 the step is lr * d / (sqrt(v) + tau), and after a pseudo-gradient d
    v >= d^2 (Adagrad), >= (1 - b2) d^2 (Adam), >= min(1 - b2, b2) d^2 (Yogi, moving up
    from below or down from above d^2): every step is at most lr / sqrt(1 - b2) with
    b2 = 0.75."""
    hp = {"server_lr": 0.5, "beta1": 0.0, "tau": 1e-3}
    if kind != "fedadagrad":
        hp["beta2"] = 0.75
    strategy, x = _make(kind, hp), {"w": np.array([0.0])}
    bound = hp["server_lr"] / math.sqrt(1 - hp.get("beta2", 0.0)) * (1 + 1e-12)
    for d in deltas:
        target = FitResult(node_id="a", params={"w": x["w"] + d}, num_examples=1)
        new = strategy.aggregate_fit(1, x, [target])
        assert abs(float(new["w"][0] - x["w"][0])) <= bound
        x = new


# ---- settings --------------------------------------------------------------------------


def test_registered_with_their_names_and_defaults():
    for name, cls in CLASSES.items():
        assert STRATEGIES[name] is cls and cls().name == name
        assert make_strategy(StrategyConfig(name=name)) == cls()
    assert (FedAdam().server_lr, FedAdam().beta1, FedAdam().beta2, FedAdam().tau) == (
        0.01,
        0.9,
        0.99,
        1e-3,
    )
    assert FedYogi() == FedYogi(server_lr=0.01, beta1=0.9, beta2=0.99, tau=1e-3)
    assert FedAdagrad() == FedAdagrad(server_lr=0.1, beta1=0.9, tau=1e-3)
    assert FedAvgM() == FedAvgM(server_lr=1.0, momentum=0.9)
    assert make_strategy(StrategyConfig()) == FedAvg(server_lr=1.0)


def _coordinator(*flags: str) -> StrategyConfig:
    return _config(build_parser().parse_args(["coordinator", *flags])).strategy  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("flags", "overrides", "expected"),
    [
        (
            ["--strategy", "fedadam", "--server-lr", "0.1", "--server-beta1", "0.5"],
            ["strategy=fedadam", "strategy.server_lr=0.1", "strategy.beta1=0.5"],
            FedAdam(server_lr=0.1, beta1=0.5),
        ),
        (
            ["--strategy", "fedyogi", "--server-beta2", "0.9", "--server-tau", "0.01"],
            ["strategy=fedyogi", "strategy.beta2=0.9", "strategy.tau=0.01"],
            FedYogi(beta2=0.9, tau=0.01),
        ),
        (
            ["--strategy", "fedadagrad", "--server-tau", "0.1"],
            ["strategy=fedadagrad", "strategy.tau=0.1"],
            FedAdagrad(tau=0.1),
        ),
        (
            ["--strategy", "fedavgm", "--server-momentum", "0.5", "--server-lr", "0.5"],
            ["strategy=fedavgm", "strategy.server_momentum=0.5", "strategy.server_lr=0.5"],
            FedAvgM(momentum=0.5, server_lr=0.5),
        ),
    ],
)
def test_the_flags_and_the_keys_reach_the_strategy(flags, overrides, expected):
    assert make_strategy(_coordinator(*flags)) == expected
    assert make_strategy(validate(compose_settings(*overrides)).strategy) == expected


REFUSED = [
    ("fedadagrad", "beta2", "0.9", "has no effect with strategy fedadagrad"),
    ("fedadam", "server_momentum", "0.5", "has no effect with strategy fedadam"),
    ("fedavgm", "beta1", "0.5", "has no effect with strategy fedavgm"),
    ("fedavg", "tau", "0.1", "read by fedadagrad and fedadam and fedyogi only"),
    ("median", "server_lr", "0.5", "has no effect with strategy median"),
    ("fedadam", "beta1", "1", "must be a number in [0, 1)"),
    ("fedyogi", "beta2", "-0.1", "must be a number in [0, 1)"),
    ("fedavgm", "server_momentum", "1.0", "must be a number in [0, 1)"),
    ("fedadam", "beta1", "nan", "must be a number in [0, 1)"),
    ("fedadam", "tau", "0", "must be a number > 0"),
    ("fedyogi", "tau", "inf", "must be a number > 0"),
    ("fedadagrad", "server_lr", "-1", "must be a number > 0"),
]


@pytest.mark.parametrize(("strategy", "key", "value", "words"), REFUSED)
def test_a_bad_or_unread_option_is_refused_by_its_key(strategy, key, value, words):
    with pytest.raises(ConfigError) as simulated:
        validate(compose_settings(f"strategy={strategy}", f"strategy.{key}={value}"))
    assert simulated.value.key == f"strategy.{key}" and words in simulated.value.message
    flag = flag_of(f"strategy.{key}")
    with pytest.raises(ConfigError) as deployed:
        _coordinator("--strategy", strategy, flag, value)
    assert deployed.value.key == f"strategy.{key}" and words in deployed.value.message


def test_the_server_optimizer_flags_are_named_for_the_server():
    assert [flag_of(f"strategy.{k}") for k in ("beta1", "beta2", "tau", "server_momentum")] == [
        "--server-beta1",
        "--server-beta2",
        "--server-tau",
        "--server-momentum",
    ]


@pytest.mark.parametrize(
    ("cls", "kwargs", "words"),
    [
        (FedAdam, {"server_lr": 0.0}, "server_lr must be a number > 0"),
        (FedAdam, {"beta1": 1.0}, "beta1 must be in [0, 1)"),
        (FedYogi, {"beta2": 1.5}, "beta2 must be in [0, 1)"),
        (FedAdagrad, {"tau": 0.0}, "tau must be a number > 0"),
        (FedAdagrad, {"tau": math.inf}, "tau must be a number > 0"),
        (FedAvgM, {"momentum": -0.1}, "momentum must be in [0, 1)"),
        (FedAvgM, {"server_lr": math.nan}, "server_lr must be a number > 0"),
    ],
)
def test_the_constructors_refuse_out_of_range_hyperparameters(cls, kwargs, words):
    with pytest.raises(ValueError) as refused:
        cls(**kwargs)
    assert words in str(refused.value)

"""``simulation.workers`` (and the batched backend's ``device``/``max_chunk``) are read, or
refused by name, never silently ignored: unset means the backend's default (2 threads,
processes or actors), sequential refuses a value it would not use, and a GPU's single
driving thread is said in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fedops.config.hydra_app import compose_settings, simulate_main
from fedops.runtime.settings import ConfigError
from fedops.runtime.simulate_settings import (
    DEFAULT_WORKERS,
    SimulateConfig,
    SimulationConfig,
    backend_workers,
    validate,
)
from fedops.simulation.backend_choice import choose_backend


def _valid(*overrides: str) -> SimulateConfig:
    return validate(compose_settings(*overrides))


def test_sequential_refuses_workers_naming_the_key_and_its_readers() -> None:
    with pytest.raises(ConfigError) as info:
        _valid("simulation=sequential", "simulation.workers=3")
    assert info.value.key == "simulation.workers"
    assert "one client at a time" in info.value.message
    for backend in ("vectorized", "process", "ray"):
        assert backend in info.value.message


def test_sequential_without_workers_validates_and_runs_one_client_at_a_time() -> None:
    cfg = _valid("simulation=sequential")
    assert cfg.simulation.workers is None  # the user never set it: nothing to tell off
    assert backend_workers(cfg.simulation) == 1


@pytest.mark.parametrize("group", ["vectorized", "process", "ray"])
def test_unset_workers_resolve_to_the_backends_default(group: str) -> None:
    cfg = _valid(f"simulation={group}")
    assert cfg.simulation.workers is None
    assert backend_workers(cfg.simulation) == DEFAULT_WORKERS == 2


def test_the_default_backend_resolves_to_two_threads_on_the_cpu() -> None:
    assert backend_workers(_valid().simulation, "cpu") == 2


@pytest.mark.parametrize("group", ["vectorized", "process", "ray"])
@pytest.mark.parametrize("workers", [1, 3])
def test_explicit_workers_are_honoured(group: str, workers: int) -> None:
    cfg = _valid(f"simulation={group}", f"simulation.workers={workers}")
    assert backend_workers(cfg.simulation) == workers


def test_workers_below_one_are_refused_by_name() -> None:
    with pytest.raises(ConfigError) as info:
        _valid("simulation.workers=0")
    assert info.value.key == "simulation.workers"


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["simulation=sequential", "simulation.max_chunk=64"], "simulation.max_chunk"),
        (["simulation=sequential", "simulation.device=cuda"], "simulation.device"),
        (["simulation=process", "simulation.device=auto"], "simulation.device"),
        (["simulation=ray", "simulation.max_chunk=8"], "simulation.max_chunk"),
    ],
)
def test_batched_only_keys_are_refused_on_other_backends(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _valid(*overrides)
    assert info.value.key == key
    assert "only simulation=vectorized reads it" in info.value.message


def test_batched_only_keys_at_their_defaults_pass_everywhere() -> None:
    for group in ("sequential", "process", "ray"):  # the value nobody typed
        _valid(f"simulation={group}", "simulation.device=cpu", "simulation.max_chunk=1024")
    _valid("simulation.device=cuda", "simulation.max_chunk=8")  # read by vectorized


def test_a_gpu_runs_one_thread_and_says_so_for_explicit_workers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fedops.simulate")
    s = SimulationConfig(backend="vectorized", device="cuda", workers=4)
    assert backend_workers(s, "cuda") == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "fedops.simulate"]
    assert len(lines) == 1
    assert "one thread drives the GPU" in lines[0] and "simulation.workers=4" in lines[0]


@pytest.mark.parametrize("workers", [None, 1])
def test_a_gpu_says_nothing_when_workers_ask_for_nothing_more(
    workers: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fedops.simulate")
    s = SimulationConfig(backend="vectorized", device="auto", workers=workers)
    assert backend_workers(s, "cuda") == 1
    assert not [r for r in caplog.records if r.name == "fedops.simulate"]


def test_the_vectorized_transport_gets_the_resolved_default() -> None:
    from fedops.simulation.engine import load_federation, make_transport

    cfg = _valid("rounds=1")
    task, data = load_federation(cfg)
    transport = make_transport(cfg, task, data)
    try:
        assert transport.spread.workers == DEFAULT_WORKERS  # type: ignore[attr-defined]
    finally:
        transport.close()


def test_the_command_refuses_sequential_workers_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = simulate_main(
        [
            "simulation=sequential",
            "simulation.workers=3",
            f"hydra.run.dir={tmp_path / 'sim'}",
            "hydra/job_logging=none",
            "hydra/hydra_logging=none",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("fedops simulate: error: simulation.workers: has no effect"), err
    assert "Traceback" not in err
    assert not (tmp_path / "sim" / "state.sqlite").exists()  # refused before any run


def test_a_fallback_to_sequential_names_the_batched_keys_it_does_not_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The default backend moving a run to sequential (here: an optimizer the batched
    trainers do not run) says which of the user's batched-backend keys go unused."""
    set_keys = _valid("client.optimizer=adam", "simulation.workers=3", "simulation.max_chunk=8")
    unset = _valid("client.optimizer=adam")
    for cfg, said in ((set_keys, True), (unset, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fedops.simulate"):
            assert choose_backend(cfg) == "sequential"
        (line,) = [
            r.getMessage() for r in caplog.records if "not the batched one" in r.getMessage()
        ]
        assert ("simulation.workers=3, simulation.max_chunk=8 not used there" in line) is said

"""``fedops simulate``: a whole federation in this process, through the deployment's driver.

The engine only assembles parts: data and model (a built-in dataset or the
user's task), a backend transport, and the same strategy, round driver, run
store and metrics as the coordinator. Nothing here decides how a round goes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch

from fedops.core.monitoring.profile import ReportLimits
from fedops.core.training import TrainConfig
from fedops.crypto import Crypto
from fedops.data import FederatedData
from fedops.data.materialize import DataError
from fedops.reporting.plots import plot_run
from fedops.runtime.driver import DriverConfig
from fedops.runtime.records import RecordSettings, RunRecords, run_recorded
from fedops.runtime.run import RunPlan, make_strategy
from fedops.runtime.section_settings import monitor_settings, privacy_settings, secagg_settings
from fedops.runtime.simulate_settings import SimulateConfig, backend_workers
from fedops.runtime.transport import Transport
from fedops.simulation.backend_choice import settle_backend
from fedops.simulation.faults import FaultPlan
from fedops.simulation.federation import round_loader, use_threads
from fedops.simulation.flower_federation import flower_run_task, flower_sites
from fedops.simulation.inmemory import InMemoryTransport
from fedops.simulation.lazy_federation import (
    LazyFederation,
    LazyVectorizedTransport,
    open_federation,
)
from fedops.simulation.local_dp_sites import LocalDPSites
from fedops.simulation.pool import WorkerTransport
from fedops.simulation.process import ProcessTransport
from fedops.simulation.secure_backend import SecureSimTransport
from fedops.simulation.vectorized_backend import VectorizedTransport
from fedops.tasks import Task
from fedops.tasks.contract import TaskError
from fedops.tasks.ledger_book import LedgerBook
from fedops.tasks.site import Site, global_evaluator, initial_params

log = logging.getLogger("fedops.simulate")

#: the task and data a run trains on: a module attribute, so the benchmarks can hand a run
#: the federation they generated (``engine.load_federation = ...``)
load_federation = open_federation


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("simulation.device=cuda but no CUDA device is available")
    return name


def make_transport(
    cfg: SimulateConfig,
    task: Task,
    data: FederatedData | LazyFederation | None,
    run_dir: Path | None = None,
) -> Transport:
    """The backend; under ``privacy=local`` every simulated site (sequential or batched) keeps
    its privacy ledger in one book, ``run_dir/site_ledgers/ledger_book.sqlite`` (see
    :func:`site_ledger_book`)."""
    c, s = cfg.client, cfg.simulation
    train = TrainConfig(
        epochs=c.epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        optimizer=c.optimizer,
        momentum=c.momentum,
    )
    faults = FaultPlan(
        seed=cfg.seed,
        dropout_rate=s.dropout_rate,
        straggler_rate=s.straggler_rate,
        drop_stragglers=s.drop_stragglers,
    )
    if s.backend == "vectorized":
        assert data is not None
        return _vectorized(cfg, task, data, train, faults, run_dir)
    if s.backend == "process":
        return ProcessTransport(cfg, faults=faults)
    if s.backend == "ray":
        from fedops.simulation.ray_backend import RayTransport  # optional dependency

        return RayTransport(cfg, faults=faults)
    if s.backend == "sequential" and cfg.flower_app:  # the app's own training, per client
        return InMemoryTransport(flower_sites(cfg, train), faults=faults)
    if s.backend == "sequential":
        return InMemoryTransport(_sequential_sites(cfg, task, train, run_dir), faults=faults)
    raise ValueError(f"unknown simulation.backend {s.backend!r}")


def _vectorized(
    cfg: SimulateConfig,
    task: Task,
    data: FederatedData | LazyFederation,
    train: TrainConfig,
    faults: FaultPlan,
    run_dir: Path | None,
) -> VectorizedTransport:
    s = cfg.simulation
    device = _device(s.device)
    model = initial_model(task, cfg.seed)
    if isinstance(data, LazyFederation):  # too big for memory: each round's clients
        batched: Callable[..., VectorizedTransport] = partial(LazyVectorizedTransport, data)
    else:
        batched = partial(VectorizedTransport, data)
    return batched(
        model,
        train,
        faults=faults,
        max_chunk=s.max_chunk,
        device=device,
        workers=backend_workers(s, device),  # one thread drives a GPU (said in the log)
        reload=round_loader(task, s.num_clients) if cfg.task else None,
        groups_of=task.sensitive_groups,
        report_limits=ReportLimits(min_count=cfg.monitoring.min_count),
        local_dp=LocalDPSites(
            model,
            max_epsilon=cfg.privacy.site_max_epsilon,
            max_delta=cfg.privacy.delta,  # a simulated site accounts at the run's δ
            book=site_ledger_book(run_dir if cfg.privacy.name == "local" else None),
        ),
    )


def _sequential_sites(
    cfg: SimulateConfig, task: Task, train: TrainConfig, run_dir: Path | None
) -> list[Site]:
    """One :class:`Site` per simulated client, sharing one model object."""
    num_clients = cfg.simulation.num_clients
    shared = task.build_model()
    # on disk, so a crashed and resumed simulation continues what each site spent
    book = site_ledger_book(run_dir if cfg.privacy.name == "local" else None)
    sites = [
        Site(
            task,
            site=i,
            num_sites=num_clients,
            train_config=train,
            model=shared,
            max_epsilon=cfg.privacy.site_max_epsilon,
            max_delta=cfg.privacy.delta,  # a simulated site accounts at the run's δ
            report_limits=ReportLimits(min_count=cfg.monitoring.min_count),
        )
        for i in range(num_clients)
    ]
    for i, site in enumerate(sites):
        site.ledger = book.page(i)
    return sites


def site_ledger_book(run_dir: Path | None) -> LedgerBook:
    """Every simulated site's privacy ledger under local DP: one file in ``run_dir`` (a
    resumed simulation continues what each site spent, and imports the per-site
    ``site-<i>/privacy_ledger.sqlite`` an older fedops kept there); None: in memory."""
    return LedgerBook(Path(run_dir) / "site_ledgers" if run_dir is not None else None)


def initial_model(task: Task, seed: int) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return task.build_model()


def run_simulation(cfg: SimulateConfig, run_dir: Path) -> dict[str, Any]:
    """Run (or resume) the configured federation in ``run_dir``; return its summary."""
    try:
        return _run(cfg, run_dir)
    finally:
        # Drawn after _run has returned, so every client's data and the backend are
        # released first: matplotlib (~20 MB) then does not add to the run's peak memory.
        plot_run(run_dir)


def _run(cfg: SimulateConfig, run_dir: Path) -> dict[str, Any]:
    use_threads(cfg.simulation.threads)
    # the backend that can run this task (the batched one unless it cannot), said in the log
    run_cfg = settle_backend(cfg)
    try:  # the task's data read and checked before the run directory holds anything
        task, data = (
            (flower_run_task(run_cfg), None) if cfg.flower_app else load_federation(run_cfg)
        )
    except DataError as exc:
        raise TaskError(str(exc)) from None
    transport = make_transport(run_cfg, task, data, run_dir)
    evaluate_global = global_evaluator(task)  # load_server_data() checked: before the records
    s, a = cfg.simulation, cfg.secagg
    secagg = secagg_settings(a)
    if secagg is not None and not isinstance(transport, WorkerTransport):
        # in-process backends: the virtual clients' SecAgg+ side runs here; the process
        # and Ray backends run it in the worker that owns each client (secure_worker)
        transport = SecureSimTransport(
            transport, Crypto(), seed=cfg.seed, noise_seed=cfg.privacy.seed
        )
    config = asdict(cfg)
    records = RunRecords.open(  # the simulated coordinator's store and signed log
        RecordSettings(
            run_dir=run_dir,
            config=config,
            task_digest=task.digest,
            hide_participants=cfg.privacy.name == "central"
            and not cfg.privacy.publish_participants,
            mlflow_uri=cfg.mlflow_uri,
            mlflow_experiment=cfg.mlflow_experiment,
            mlflow_params=_flat(config),
        )
    )
    plan = RunPlan(
        label="simulate",
        config=records.config,
        strategy=make_strategy(cfg.strategy),
        driver=DriverConfig(
            rounds=cfg.rounds,
            min_clients=1,
            clients_per_round=s.clients_per_round,
            seed=cfg.seed,
            min_fit_results=s.min_fit_results,
            train=cfg.client.plan(),  # what a deployed coordinator sends its sites
        ),
        initial_params=(
            (lambda: transport.fetch_initial_params(0))  # the app's own, as a site's
            if cfg.flower_app
            else (lambda: initial_params(task, cfg.seed))
        ),
        evaluate_global=evaluate_global,
        summary=_summary(cfg, task, backend=run_cfg.simulation.backend),
        secagg=secagg,
        privacy=privacy_settings(cfg.privacy, a, min_fit_results=s.min_fit_results),
        monitoring=monitor_settings(cfg.monitoring, privacy=cfg.privacy.name),
        task=task,
        observers=records.observers(),
        on_fallback=records.trail.checkpoint_fallback,
    )
    return run_recorded(plan, records, transport, on_exit=lambda status: transport.close())


def _summary(cfg: SimulateConfig, task: Task, *, backend: str) -> dict[str, Any]:
    """What the run's summary.json says of its set-up (``backend``: the one that ran)."""
    return {
        "task": cfg.task,
        "flower_app": cfg.flower_app,
        "task_digest": task.digest,
        "dataset": None if cfg.task or cfg.flower_app else cfg.dataset.name,
        "strategy": cfg.strategy.name,
        "backend": backend,
        "num_clients": cfg.simulation.num_clients,
        "rounds_planned": cfg.rounds,
        "secagg": cfg.secagg.name,
        "privacy_mode": cfg.privacy.name,
        "train": asdict(cfg.client),
    }


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"client": {"lr": 0.1}}`` -> ``{"client.lr": 0.1}`` (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out

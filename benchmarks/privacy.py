"""Privacy cost per round: every DP mode (and SecAgg+) against no DP, in one run.

    python benchmarks/privacy.py                  # full run, about 2.5 minutes on 2 cores
    python benchmarks/privacy.py --quick          # about 30 s (fewer rounds, a smaller (c))
    python benchmarks/privacy.py --json out.json  # also write every figure as JSON

The issue asks for "the overhead of each mode per round as a ratio to no-DP". Modes, each one
set of Hydra overrides on top of the same composed ``simulate`` config:

* ``none``: no DP, FedAvg (the baseline of every table);
* ``privacy=central``: DP-FedAvg, fixed clip norm (clip 1.0, σ = 1.0, δ = 1e-5), accounted as
  Poisson sampling at q = m/N (PLD, RDP beside it), on the baseline's cohort (see below);
* ``privacy=central`` as deployed: the same, with the cohort drawn by Poisson sampling from the
  OS's CSPRNG (its size varies round to round: Binomial(N, q), so the paired ratio also holds
  the extra or missing clients' training);
* ``privacy=central_adaptive``: the same with adaptive clipping (Andrew et al. 2021);
* ``privacy=distributed secagg=secaggplus``: clients clip and add Skellam noise before masking;
* ``secagg=secaggplus``: SecAgg+ without DP, for comparison;
* ``privacy=central`` with numpy's BLAS limited to 1 thread (threadpoolctl) while its slots run
  (workload (b) only, not with --quick): DP's clipping took norms with ``np.vdot``, which
  OpenBLAS ran on several threads, and on a shared 2-core machine that made a call anywhere
  from 1x to ~100x slower; norms now avoid BLAS, and this row checks it stays so;
* ``privacy=local``: DP-SGD with Opacus on every site; it runs with ``simulation=sequential``
  only, so it has its own table (c) against ``none`` on that backend.
A mode whose config ``validate`` refuses (not implemented yet, or not with this backend) is
printed as "not available yet" with validate's message; a mode that fails while running is
printed with its error.

Workloads (``+scenario=fleet_1000`` with ``simulation.clients_per_round=100``): FedProx's
Synthetic(1,1), 1000 clients (power-law sizes), 100 sampled per round (q = 0.1), 1 local
epoch of SGD (batch 10, lr 0.01), 1 torch thread, seed 0, evaluation on the round's sampled
clients. (a) ``logreg``: logistic regression 60 -> 10 (610 parameters), vectorized backend,
12 rounds; (b) ``mlp``: ``model=mlp model.hidden=1408`` (99,978 parameters), vectorized, 7
rounds; (c) ``local``: (a)'s model on ``simulation=sequential``, 4 rounds (--quick: 20 clients
per round). Every mode of a workload starts from the same model. DP draws its own cohort
(Poisson from the OS's CSPRNG; distributed DP m of N from it), which would make rounds
unpaired (the fleet's client sizes follow a power law): so every DP mode except "as deployed"
is handed the baseline's cohort (``sample_clients`` with the run seed, m = 100) by replacing its
privacy object's ``sample`` for the benchmark only; its accounting is unchanged (q = m/N, fixed
denominator m). Rounds are then paired across modes.

How: each mode is a real ``fedops.simulation.engine.run_simulation`` on a config composed by
Hydra (as ``fedops simulate`` does), run dirs in a temporary directory. All modes of a workload
run in one process, each on its own thread, interleaved *round by round*: a baton lets exactly
one simulation work at a time (set-up, then round 1 of every mode, then round 2, ...), and the
order of the modes rotates every round, so drift of this shared machine hits every mode alike.
The data are generated once and shared; the progress display and the end-of-run plots are
switched off (neither is inside a round). Timed per round with time.perf_counter:
``RoundDriver.run_round`` (the round), and inside it the fit phase (``_plain_fit`` or
``SecureFit.run``: training and collection, for SecAgg+ the whole protocol), the aggregation
(``FedAvg.aggregate_fit``, or the privacy object's ``aggregate``: central DP's clip + noise +
mean) and the accounting (the privacy object's ``begin_round`` + ``spend`` + ``metrics``, and the
ledger's commit ``RunStore.spend_privacy``: ε by dp_accounting's PLD, the no-amplification PLD
and RDP beside it, each once per round).

Printed per workload and mode: s/round = median of rounds 2..R (round 1 is warm-up); ratio to
none = median over rounds 2..R of (mode's round / none's round), +ms = median of the paired
differences; the breakdown; final eval accuracy (example-weighted over the last round's
sampled clients), ε (PLD and RDP, δ = 1e-5), the mean cohort size and the clip norm from the
run's metrics.jsonl.

Then where the overhead comes from, timed on its own (median of --reps, the functions
interleaved, after a warm-up): (d) ``fedops.core.privacy.central.private_mean`` for 100 client
updates of each model's size (fixed and adaptive clipping), beside ``FedAvg.aggregate_fit`` of
the same updates (what it replaces), with numpy's BLAS as it is and limited to 1 thread
(``--blas-threads 1`` runs the whole benchmark so); (e) one ε computation after 1 .. 1000
rounds at q = 0.1, σ = 1 (``fedops.core.privacy.accountant``, its per-history cache bypassed:
every round's history is new): PLD (the headline; the one-round PLD is cached per event, so
this is what the driver pays every round), the no-amplification PLD and RDP, each of which the
driver computes once per round, and once the one-round PLD's construction (first round only).
The simulations clear that per-history cache at the start of every round, for the same reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fedops.config.hydra_app import CONFIG_DIR, SCENARIO_DIR, register
from fedops.core.privacy import accountant as acct
from fedops.core.privacy.accountant import RoundEvent
from fedops.core.privacy.central import AdaptiveClipping, private_mean
from fedops.core.results import FitResult
from fedops.core.rounds import sample_clients
from fedops.core.strategies.fedavg import FedAvg
from fedops.runtime import run as run_module
from fedops.runtime.driver import RoundDriver
from fedops.runtime.privacy import RoundSample
from fedops.runtime.secure_fit import SecureFit
from fedops.runtime.settings import ConfigError
from fedops.runtime.simulate_settings import SimulateConfig, validate
from fedops.runtime.store import RunStore
from fedops.simulation import engine

try:  # optional: shows private_mean with numpy's BLAS on one thread beside the default
    from threadpoolctl import OpenBLASController, threadpool_info, threadpool_limits
except ImportError:  # pragma: no cover
    OpenBLASController = threadpool_info = threadpool_limits = None

#: mode -> (label, Hydra overrides on top of the workload's). A mode whose config does not
#: validate (not implemented yet, or not with this backend) is reported with validate's reason.
MODES: dict[str, tuple[str, list[str]]] = {
    "none": ("none (FedAvg)", []),
    "central": ("privacy=central", ["privacy=central"]),
    "central_poisson": (
        "privacy=central, as deployed (Poisson cohort from the CSPRNG)",
        ["privacy=central"],
    ),
    "central_adaptive": ("privacy=central_adaptive", ["privacy=central_adaptive"]),
    "distributed": (
        "privacy=distributed secagg=secaggplus",
        ["privacy=distributed", "secagg=secaggplus"],
    ),
    "secaggplus": ("secagg=secaggplus (no DP)", ["secagg=secaggplus"]),
    "central_blas1": ("privacy=central, 1 BLAS thread", ["privacy=central"]),
    "local": ("privacy=local (Opacus DP-SGD)", ["privacy=local"]),
}
#: modes whose slots run with numpy's BLAS limited to this many threads (threadpoolctl)
BLAS_LIMIT = {"central_blas1": 1}
#: DP modes that draw their own cohort (not handed the baseline's)
OWN_COHORT = {"central_poisson"}
SECTIONS = ("fit", "aggregate", "accounting")


# --------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------
def compose_config(overrides: list[str]) -> SimulateConfig:
    """The config ``fedops simulate OVERRIDES`` would run (scenarios on the search path)."""
    register()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(
            config_name="simulate",
            overrides=[f"hydra.searchpath=[file://{SCENARIO_DIR}]", *overrides],
        )
    settings = OmegaConf.to_object(cfg)
    assert isinstance(settings, SimulateConfig)
    return settings


@dataclass
class Workload:
    """One federation, run in every mode of ``modes`` (``none`` first: the baseline)."""

    tag: str
    name: str
    title: str
    overrides: list[str]
    rounds: int
    modes: list[str]
    per_round: int


def workloads(args: argparse.Namespace) -> list[Workload]:
    def fleet(per_round: int) -> list[str]:
        return [
            "+scenario=fleet_1000",
            f"simulation.num_clients={args.clients}",
            f"simulation.clients_per_round={per_round}",
            f"seed={args.seed}",
        ]

    dp = ["none", "central", "central_poisson", "central_adaptive", "distributed", "secaggplus"]
    n = args.per_round
    return [
        Workload(
            "a", "logreg", "logistic regression, vectorized backend", fleet(n), args.rounds, dp, n
        ),
        Workload(
            "b",
            "mlp",
            f"MLP (hidden {args.hidden}), vectorized backend",
            [*fleet(n), "model=mlp", f"model.hidden={args.hidden}"],
            args.mlp_rounds,
            dp + ([] if args.quick or threadpool_limits is None else ["central_blas1"]),
            n,
        ),
        Workload(
            "c",
            "local",
            "logistic regression, sequential backend (what privacy=local runs on)",
            [*fleet(args.local_per_round), "simulation=sequential"],
            args.local_rounds,
            ["none", "local"],
            args.local_per_round,
        ),
    ]


def check_mode(overrides: list[str]) -> SimulateConfig | str:
    """The validated config, or why ``validate`` (or composition) refuses it."""
    try:
        return validate(compose_config(overrides))
    except ConfigError as exc:
        return f"{exc.key}: {exc.message}"
    except Exception as exc:  # composition itself refused it (e.g. no such config group option)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"


# --------------------------------------------------------------------------------------
# Round-by-round interleaving of several simulations, one thread each
# --------------------------------------------------------------------------------------
class Baton:
    """Exactly one simulation works at a time, in the order of ``schedule`` (a list of names:
    each thread's set-up slot, then one slot per round)."""

    def __init__(self, schedule: list[str]) -> None:
        self.schedule = schedule
        self.pos = 0
        self.done: set[str] = set()
        self.cv = threading.Condition()

    def _skip_done(self) -> None:
        while self.pos < len(self.schedule) and self.schedule[self.pos] in self.done:
            self.pos += 1

    def acquire(self, name: str) -> None:
        with self.cv:
            self.cv.wait_for(
                lambda: self.pos >= len(self.schedule) or self.schedule[self.pos] == name
            )

    def release(self, name: str) -> None:
        with self.cv:
            if self.pos < len(self.schedule) and self.schedule[self.pos] == name:
                self.pos += 1
                self._skip_done()
            self.cv.notify_all()

    def finish(self, name: str) -> None:
        with self.cv:
            self.done.add(name)
        self.release(name)
        with self.cv:
            self._skip_done()
            self.cv.notify_all()


@dataclass
class Recorder:
    """One simulation's per-round timings (seconds)."""

    name: str
    baton: Baton
    blas: Callable[[], None] = lambda: None  # sets numpy's BLAS threads for this mode's slots
    round_s: list[float] = field(default_factory=list)
    sections: list[dict[str, float]] = field(default_factory=list)
    current: dict[str, float] = field(default_factory=dict)


_local = threading.local()


def _recorder() -> Recorder | None:
    return getattr(_local, "rec", None)


def _timed_section(real: Callable[..., Any], section: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        rec = _recorder()
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            if rec is not None:
                rec.current[section] = rec.current.get(section, 0.0) + time.perf_counter() - t

    return wrapper


def _timed_round(real: Callable[..., Any]) -> Callable[..., Any]:
    def run_round(self: RoundDriver, server_round: int, params: Any) -> Any:
        rec = _recorder()
        if rec is None:
            return real(self, server_round, params)
        rec.baton.release(rec.name)  # the previous slot (set-up, or the last round + its save)
        rec.baton.acquire(rec.name)
        rec.blas()
        # ε is cached per history: modes of one workload (and workloads) share σ and q, so
        # without this a mode would find its round's ε computed by another; a run in its own
        # process meets a new history every round
        acct._epsilon.cache_clear()
        rec.current = dict.fromkeys(SECTIONS, 0.0)
        t = time.perf_counter()
        out = real(self, server_round, params)
        rec.round_s.append(time.perf_counter() - t)
        rec.sections.append(dict(rec.current))
        return out

    return run_round


#: the privacy object's methods the round driver calls, and the section each is timed in
PRIVACY_SECTION: dict[str, str] = {
    "begin_round": "accounting",
    "spend": "accounting",
    "metrics": "accounting",
    "aggregate": "aggregate",
}


def _baseline_cohort(privacy: Any, seed: int) -> Callable[..., RoundSample]:
    """``sample`` handing DP the clients the baseline samples (paired rounds; accounting as is:
    q = m/N and the fixed denominator m)."""

    def sample(nodes: Any, per_round: int | None, server_round: int) -> RoundSample:
        m = min(per_round or len(nodes), len(nodes))
        selected = sample_clients(nodes, m, seed=seed, server_round=server_round)
        return RoundSample(selected=selected, population=len(nodes), denominator=float(m))

    return sample


def _timed_init(real: Callable[..., Any]) -> Callable[..., Any]:
    def __init__(self: RoundDriver, *args: Any, **kwargs: Any) -> None:
        real(self, *args, **kwargs)
        if self.privacy is None:
            return
        # time the driver's calls (outer calls only) on the instance itself, so the driver's
        # isinstance checks still see a CentralPrivacy
        for name, section in PRIVACY_SECTION.items():
            if hasattr(self.privacy, name):
                setattr(self.privacy, name, _timed_section(getattr(self.privacy, name), section))
        rec = _recorder()
        if rec is None or rec.name not in OWN_COHORT:
            self.privacy.sample = _baseline_cohort(self.privacy, self.config.seed)  # type: ignore[method-assign]

    return __init__


class _QuietProgress:
    """Stands in for the terminal progress view (one line per round per mode otherwise)."""

    def __init__(self, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> _QuietProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, record: Any) -> None:
        return None


@contextlib.contextmanager
def instrumented(data_cache: dict[str, Any]):  # type: ignore[no-untyped-def]
    """Patch the timing points, the shared data, quiet progress and no plots; undo after."""
    patches: list[tuple[Any, str, Any]] = [
        (RoundDriver, "__init__", _timed_init(RoundDriver.__init__)),
        (RoundDriver, "run_round", _timed_round(RoundDriver.run_round)),
        (RoundDriver, "_plain_fit", _timed_section(RoundDriver._plain_fit, "fit")),
        (SecureFit, "run", _timed_section(SecureFit.run, "fit")),
        (FedAvg, "aggregate_fit", _timed_section(FedAvg.aggregate_fit, "aggregate")),
        (RunStore, "spend_privacy", _timed_section(RunStore.spend_privacy, "accounting")),
        (run_module, "RoundProgress", _QuietProgress),
        (engine, "plot_run", lambda run_dir: None),
    ]
    real_load = engine.load_federation

    def shared_load(cfg: SimulateConfig) -> Any:
        if cfg.task:
            return real_load(cfg)
        key = data_key(cfg)
        if key not in data_cache:
            data_cache[key] = real_load(cfg)[1]
        return model_task(cfg, data_cache[key]), data_cache[key]

    patches.append((engine, "load_federation", shared_load))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, new in patches:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, old in saved:
            setattr(obj, name, old)


def blas_setter(threads: int | None) -> Callable[[], None]:
    """Sets numpy's BLAS threads to ``threads`` (None: as they were at the start)."""
    if threadpool_info is None or threadpool_limits is None:
        return lambda: None
    if threads is None:
        threads = max(
            (p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=1
        )
    return lambda: set_blas_threads(threads)


def set_blas_threads(threads: int) -> None:
    """numpy's BLAS threads, process-wide. threadpoolctl (>= 3.6) lets only one thread set them
    and silently ignores the others; only one simulation runs at a time here, so take over."""
    assert threadpool_limits is not None
    with contextlib.suppress(AttributeError):
        OpenBLASController.clear_controlling_thread(force=True)  # type: ignore[attr-defined]
    threadpool_limits(threads, user_api="blas")


def run_interleaved(
    configs: dict[str, SimulateConfig], rounds: int, work_dir: Path
) -> dict[str, dict[str, Any]]:
    """Run every config's simulation on its own thread, round by round in rotating order.

    Only one simulation runs at a time, so the BLAS thread count (process-wide) can be set per
    mode at the start of each of its slots.
    """
    names = list(configs)
    schedule = list(names)  # set-up slots
    for r in range(rounds):
        k = r % len(names)
        schedule += names[k:] + names[:k]
    baton = Baton(schedule)
    out: dict[str, dict[str, Any]] = {}
    default_blas = blas_setter(None)
    setters = {
        name: blas_setter(BLAS_LIMIT[name]) if name in BLAS_LIMIT else default_blas
        for name in names
    }

    def worker(name: str) -> None:
        rec = Recorder(name=name, baton=baton, blas=setters[name])
        _local.rec = rec
        run_dir = work_dir / name
        res: dict[str, Any] = {"recorder": rec, "run_dir": run_dir}
        baton.acquire(name)
        rec.blas()
        t = time.perf_counter()
        try:
            res["summary"] = engine.run_simulation(configs[name], run_dir)
        except BaseException as exc:  # report it beside the other modes
            res["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            res["wall_s"] = time.perf_counter() - t
            out[name] = res
            baton.finish(name)

    threads = [threading.Thread(target=worker, args=(n,), name=f"sim-{n}") for n in names]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    default_blas()
    return out


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(results: dict[str, dict[str, Any]], base: str = "none") -> dict[str, dict]:
    """Medians over rounds 2..R, paired ratios to ``base``, breakdown, final metrics."""
    out: dict[str, dict] = {}
    base_rounds = results[base]["recorder"].round_s if base in results else []
    for name in sorted(results, key=list(MODES).index):
        res = results[name]
        rec: Recorder = res["recorder"]
        rows = read_metrics(res["run_dir"])
        last = rows[-1] if rows else {}
        s: dict[str, Any] = {
            "round_s": rec.round_s,
            "sections_s": rec.sections,
            "wall_s": res["wall_s"],
            "status": res.get("summary", {}).get("status", "error"),
            "final_accuracy": last.get("eval_accuracy"),
            "epsilon": last.get("epsilon"),
            "epsilon_rdp": last.get("epsilon_rdp"),
            "epsilon_known_participants": last.get("epsilon_known_participants"),
            "accountant": last.get("accountant"),
            "delta": last.get("delta"),
            "final_clip_norm": last.get("next_clip_norm"),
            "noised_unclipped_fraction": last.get("dp_noised_unclipped_fraction"),
            "clients": [row.get("num_clients") for row in rows],
            "privacy": res.get("summary", {}).get("privacy"),
        }
        if "error" in res:
            s["error"] = res["error"]
        steady = slice(1, None) if len(rec.round_s) > 1 else slice(None)
        timed = rec.round_s[steady]
        if timed:
            s["median_s"] = statistics.median(timed)
            for sec in SECTIONS:
                s[f"median_{sec}_s"] = statistics.median(x[sec] for x in rec.sections[steady])
            s["median_other_s"] = statistics.median(
                r - sum(x.values()) for r, x in zip(timed, rec.sections[steady], strict=True)
            )
            pairs = list(zip(timed, base_rounds[steady], strict=False))
            if pairs:
                s["ratio"] = statistics.median(a / b for a, b in pairs)
                s["extra_s"] = statistics.median(a - b for a, b in pairs)
        out[name] = s
    return out


def data_key(cfg: SimulateConfig) -> str:
    """Simulations with equal keys get the same generated data (the model is not in it)."""
    return repr((cfg.dataset, cfg.partition, cfg.simulation.num_clients, cfg.seed))


def model_task(cfg: SimulateConfig, data: Any) -> Any:
    return engine.task_from_data(
        data, name=cfg.dataset.name, model=cfg.model.name, hidden=cfg.model.hidden
    )


def run_workload(w: Workload, data_cache: dict[str, Any]) -> dict[str, Any]:
    checked = {m: check_mode([*w.overrides, f"rounds={w.rounds}", *MODES[m][1]]) for m in w.modes}
    configs = {m: c for m, c in checked.items() if isinstance(c, SimulateConfig)}
    if "none" not in configs:
        raise SystemExit(f"the baseline of workload {w.name} does not validate: {checked['none']}")
    with (
        tempfile.TemporaryDirectory(prefix=f"fedops-privacy-{w.name}-") as tmp,
        instrumented(data_cache),
    ):
        t = time.perf_counter()
        results = run_interleaved(configs, w.rounds, Path(tmp))
        wall = time.perf_counter() - t
        summary = summarize(results)
    cfg = configs["none"]
    initial = engine.initial_model(model_task(cfg, data_cache[data_key(cfg)]), cfg.seed)
    return {
        "tag": w.tag,
        "name": w.name,
        "title": w.title,
        "overrides": w.overrides,
        "rounds": w.rounds,
        "per_round": w.per_round,
        "num_params": sum(p.numel() for p in initial.parameters()),
        "initial": model_like(initial),
        "wall_s": wall,
        "modes": summary,
        "not_available": {m: c for m, c in checked.items() if isinstance(c, str)},
    }


# --------------------------------------------------------------------------------------
# Where the overhead comes from: server-side DP and the accountant on their own
# --------------------------------------------------------------------------------------
def interleaved_medians(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Median seconds of each function: one warm-up call each, then ``reps`` rounds in which
    every function runs once, in an order that rotates (drift hits them alike)."""
    for fn in fns.values():
        fn()
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return {n: statistics.median(ts) for n, ts in times.items()}


def model_like(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def server_dp_cost(
    shapes: dict[str, np.ndarray], n: int, reps: int, seed: int = 0
) -> dict[str, float]:
    """private_mean (fixed, adaptive) and FedAvg.aggregate_fit over ``n`` updates."""
    rng = np.random.default_rng(seed)
    current = {k: v.astype(np.float32) for k, v in shapes.items()}
    trained = [
        {k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32) for k, v in current.items()}
        for _ in range(n)
    ]
    results = [
        FitResult(node_id=str(i), params=p, num_examples=10 + i % 7) for i, p in enumerate(trained)
    ]
    fedavg = FedAvg()
    noise_rng = np.random.default_rng(seed + 1)

    def dp(adaptive: AdaptiveClipping | None) -> Callable[[], Any]:
        return lambda: private_mean(
            current,
            trained,
            denominator=float(n),
            clip_norm=1.0,
            noise_multiplier=1.0,
            rng=noise_rng,
            adaptive=adaptive,
        )

    fns = {
        "fedavg_s": lambda: fedavg.aggregate_fit(1, current, results),
        "central_s": dp(None),
        "central_adaptive_s": dp(AdaptiveClipping()),
    }
    out = interleaved_medians(fns, reps)
    if threadpool_limits is not None:  # the same with numpy's BLAS on one thread
        with threadpool_limits(1, user_api="blas"):
            one = interleaved_medians(fns, reps)
        out.update({f"{k[:-2]}_blas1_s": v for k, v in one.items()})
    return out


def blas_threads() -> str:
    """numpy's BLAS and its thread count (private_mean's norms used to go through BLAS)."""
    if threadpool_info is None:
        return "BLAS threads unknown (threadpoolctl is not installed)"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "no BLAS found"
    return "BLAS: " + ", ".join(
        f"{Path(p['filepath']).parent.name} {p['internal_api']} {p['num_threads']} threads"
        for p in pools
    )


#: (key, sampling, accountant) of each ε timing (one-round PLDs cached, as in the driver)
ACCOUNTING = (
    ("pld", "poisson", "pld"),  # the headline
    ("known", "known", "pld"),  # the no-amplification bound beside it
    ("rdp", "poisson", "rdp"),
)


def accountant_cost(rounds: list[int], q: float, reps: int) -> list[dict[str, float]]:
    """One ε computation after each number of rounds at σ = 1, δ = 1e-5, bypassing the
    per-history cache (the driver's history is new every round); and, once, the one-round
    Poisson PLD's construction (cached per event: paid in the first round only)."""
    uncached = acct._epsilon.__wrapped__

    def history(sampling: str, r: int) -> tuple[tuple[RoundEvent, int], ...]:
        rate = q if sampling == "poisson" else 1.0
        return ((RoundEvent(noise_multiplier=1.0, sampling=sampling, sample_rate=rate), r),)

    def one(h: tuple[tuple[RoundEvent, int], ...], accountant: str) -> Callable[[], float]:
        return lambda: float(uncached(h, 1e-5, accountant))

    fns: dict[str, Callable[[], Any]] = {
        f"{key}/{r}": one(history(sampling, r), accountant)
        for r in rounds
        for key, sampling, accountant in ACCOUNTING
    }
    event = history("poisson", 1)[0][0]
    build = acct._pld_one_round.__wrapped__
    fns["build"] = lambda: build(event, acct.PLD_INTERVAL)
    medians = interleaved_medians(fns, reps)
    keys = [key for key, *_ in ACCOUNTING]
    return [
        {
            "rounds": r,
            "pld_build_s": medians["build"],
            **{f"{k}_s": medians[f"{k}/{r}"] for k in keys},
            **{f"{k}_epsilon": fns[f"{k}/{r}"]() for k in keys},
        }
        for r in rounds
    ]


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------
def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _f(value: Any, fmt: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, fmt)


def report_workload(w: dict[str, Any], clients: int) -> None:
    rows = []
    empty = [""] * 10
    for name, s in w["modes"].items():
        label = MODES[name][0]
        if s["status"] != "completed":
            label += f" ({s['status']})"
        if "median_s" not in s:
            error = s.get("error", "no round completed").splitlines()[0][:200]
            rows.append([label, f"failed after {len(s['round_s'])} rounds: {error}", *empty])
            continue
        eps = "-"
        if s.get("epsilon") is not None and s.get("accountant") == "pld":
            eps = f"{s['epsilon']:.2f} / {_f(s.get('epsilon_rdp'), '.2f')}"
            if s.get("epsilon_known_participants") is not None:
                eps += f" ({s['epsilon_known_participants']:.2f})"
        elif s.get("epsilon") is not None:  # local DP: the largest a site reported
            eps = f"{s['epsilon']:.2f}"
        cohort = [c for c in s.get("clients", []) if c is not None]
        rows.append(
            [
                label,
                _f(statistics.mean(cohort) if cohort else None, ".1f"),
                f"{s['median_s']:.3f}",
                "1.00x" if name == "none" else _f(s.get("ratio"), ".2f") + "x",
                "-" if name == "none" else _f(s.get("extra_s", math.nan) * 1e3, "+.0f"),
                f"{s['median_fit_s']:.3f}",
                f"{s['median_aggregate_s'] * 1e3:.1f}",
                f"{s['median_accounting_s'] * 1e3:.0f}" if s["median_accounting_s"] else "-",
                f"{s['median_other_s']:.3f}",
                _f(s.get("final_accuracy"), ".4f"),
                eps,
                _f(s.get("final_clip_norm"), ".3g"),
            ]
        )
    notes = []
    for i, (name, why) in enumerate(w["not_available"].items(), 1):
        rows.append([f"{MODES[name][0]} [{i}]", "not available yet", *empty])
        notes.append(f"    [{i}] validate: {why}")
    print_table(
        f"({w['tag']}) {w['name']}: {w['title']}, {w['num_params']:,} parameters; {w['per_round']} "
        f"of {clients} clients per round, {w['rounds']} rounds (rounds 2..{w['rounds']} timed); "
        f"{w['wall_s']:.0f} s",
        [
            "mode",
            "clients/round",
            "s/round",
            "ratio to none",
            "+ms/round",
            "fit s",
            "aggregate ms",
            "ε accounting ms",
            "other s",
            "final acc",
            "ε PLD / RDP (known participants)",
            "clip norm",
        ],
        rows,
    )
    if notes:
        print("\n" + "\n".join(notes))


def report(results: dict[str, Any]) -> None:
    a = results["args"]
    for w in results["workloads"]:
        report_workload(w, a["clients"])
    print(
        "\n    clients/round: mean trained per round; s/round: median of rounds 2..R; ratio to "
        "none: median over those rounds of (mode's round / the same workload's none round: "
        "same sampled clients, except 'as deployed', whose Poisson cohort is its own); +ms/round: "
        "median of the paired differences. fit: training + collection (SecAgg+: the whole "
        "protocol; distributed: clipping and noise on the clients inside it; local: DP-SGD and "
        "each site's accountant); aggregate: FedAvg.aggregate_fit, or the privacy object's "
        "aggregate (central: clip + noise + mean); ε accounting: the privacy object's "
        "begin_round + spend + metrics and the ledger's commit (central/distributed: ε by PLD, "
        "the no-amplification PLD and RDP, once per round each); other: sampling, evaluation "
        "on the sampled clients, metrics. final acc: eval_accuracy of the last round; ε at "
        f"δ = {results['delta']:g} (user-level, PLD headline / RDP, and in brackets against a "
        "party that knows who took part; distributed: that is the headline; local: "
        "record-level, the largest a site reported); clip norm: the next round's (adaptive). "
        "1 BLAS thread: "
        "numpy's BLAS limited to 1 thread during that mode's rounds (see (d))."
    )
    rows = []
    blas1 = all("central_blas1_s" in c for c in results["server_dp"])
    for c in results["server_dp"]:
        row = [
            f"{c['d']:,}",
            str(c["n"]),
            f"{c['fedavg_s'] * 1e3:.1f}",
            f"{c['central_s'] * 1e3:.1f}",
            f"{c['central_adaptive_s'] * 1e3:.1f}",
            f"{c['central_s'] / c['fedavg_s']:.2f}x",
            f"{(c['central_s'] - c['fedavg_s']) * 1e3:+.1f}",
        ]
        if blas1:
            row += [
                f"{c['central_blas1_s'] * 1e3:.1f}",
                f"{c['central_adaptive_blas1_s'] * 1e3:.1f}",
                f"{c['central_blas1_s'] / c['fedavg_blas1_s']:.2f}x",
            ]
        rows.append(row)
    header = [
        "d",
        "n",
        "FedAvg.aggregate_fit ms",
        "private_mean ms",
        "private_mean adaptive ms",
        "central / FedAvg",
        "+ms",
    ]
    if blas1:
        header += ["private_mean, 1 BLAS thread ms", "adaptive, 1 BLAS thread ms", "ratio"]
    print_table(
        f"(d) server-side DP on its own: private_mean over n updates, clip 1, σ = 1 (median of "
        f"{results['args']['reps']}, interleaved, after a warm-up; {results['blas']})",
        header,
        rows,
    )
    if blas1:
        print(
            "\n    private_mean's norms no longer use BLAS (with np.vdot, a call on a shared "
            "machine took up to ~100x longer with 2 BLAS threads); the 1-thread columns are "
            "the same calls under threadpoolctl's limit of 1, for comparison."
        )
    rows = [
        [
            str(r["rounds"]),
            f"{r['pld_s'] * 1e3:.1f}",
            f"{r['known_s'] * 1e3:.1f}",
            f"{r['rdp_s'] * 1e3:.1f}",
            f"{(r['pld_s'] + r['known_s'] + r['rdp_s']) * 1e3:.0f}",
            f"{r['pld_epsilon']:.3f}",
            f"{r['known_epsilon']:.3f}",
            f"{r['rdp_epsilon']:.3f}",
        ]
        for r in results["accountant"]
    ]
    build = results["accountant"][0]["pld_build_s"] if results["accountant"] else math.nan
    print_table(
        f"(e) accountant (dp_accounting): one ε computation after R rounds (q = "
        f"{results['sample_rate']:g}, σ = 1, δ = {results['delta']:g}; PLD at interval "
        f"{acct.PLD_INTERVAL:g}, pessimistic, the one-round PLD cached per event and "
        f"self-composed R times; known: the same without sampling; RDP: {len(acct.RDP_ORDERS)} "
        f"orders). The first round also builds the one-round Poisson PLD: {build * 1e3:.0f} ms",
        [
            "R",
            "PLD ms",
            "known PLD ms",
            "RDP ms",
            "per round (all three) ms",
            "ε PLD",
            "ε known",
            "ε RDP",
        ],
        rows,
    )


# --------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds and repeats (~30 s)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--per-round", type=int, default=100, help="clients sampled per round")
    p.add_argument("--rounds", type=int, default=12, help="rounds of the logreg workload")
    p.add_argument("--mlp-rounds", type=int, default=7, help="rounds of the MLP workload")
    p.add_argument(
        "--local-rounds", type=int, default=4, help="rounds of the sequential (local DP) workload"
    )
    p.add_argument(
        "--local-per-round",
        type=int,
        help="clients per round of the local DP workload (default: --per-round; --quick: 20)",
    )
    p.add_argument("--hidden", type=int, default=1408, help="MLP width (1408: 99,978 params)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workloads",
        nargs="+",
        choices=("logreg", "mlp", "local"),
        default=["logreg", "mlp", "local"],
        help="which of (a) logreg, (b) mlp, (c) local to run",
    )
    p.add_argument(
        "--blas-threads",
        type=int,
        help="limit numpy's BLAS to this many threads for the whole run (default: as is)",
    )
    p.add_argument("--reps", type=int, default=5, help="repeats of the standalone timings")
    p.add_argument(
        "--accountant-rounds", type=int, nargs="+", default=[1, 10, 100, 1000], metavar="R"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.mlp_rounds, args.local_rounds, args.reps = 3, 2, 3, 2
        args.accountant_rounds = [1]
        args.local_per_round = args.local_per_round or 20
    args.local_per_round = args.local_per_round or args.per_round
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.blas_threads:
        if threadpool_limits is None:
            raise SystemExit("--blas-threads needs threadpoolctl (pip install threadpoolctl)")
        set_blas_threads(args.blas_threads)  # for the whole process (the default of every mode)
    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    print(
        f"Privacy benchmark: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"load average {load_start:.2f}; {blas_threads()}; modes interleaved round by round",
        flush=True,
    )
    data_cache: dict[str, Any] = {}
    done = []
    for w in (w for w in workloads(args) if w.name in args.workloads):
        print(f"{w.name}: {len(w.modes)} modes x {w.rounds} rounds ...", flush=True)
        r = run_workload(w, data_cache)
        done.append(r)
        line = ", ".join(
            f"{n} {s['median_s']:.3f} s" if "median_s" in s else f"{n} failed"
            for n, s in r["modes"].items()
        )
        print(f"  {line} [{r['wall_s']:.0f} s]", flush=True)
    print("server-side DP and accountant on their own ...", flush=True)
    server_dp = []
    for r in done:
        shapes = r.pop("initial")
        if r["name"] != "local":  # the same model as logreg
            cell = server_dp_cost(shapes, args.per_round, args.reps)
            server_dp.append({"d": r["num_params"], "n": args.per_round, **cell})
    q = args.per_round / args.clients
    accountant = accountant_cost(args.accountant_rounds, q, args.reps)
    delta = next((s["delta"] for r in done for s in r["modes"].values() if s.get("delta")), 1e-5)
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "load_avg_start": load_start,
        },
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "workloads": done,
        "server_dp": server_dp,
        "accountant": accountant,
        "sample_rate": q,
        "delta": delta,
        "blas": blas_threads(),
    }
    report(results)
    wall = time.perf_counter() - t0
    results["wall_s"] = wall
    results["machine"]["load_avg_end"] = os.getloadavg()[0]
    print(
        f"\ntotal {wall:.0f} s; load average at start {load_start:.2f}, at the end "
        f"{os.getloadavg()[0]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

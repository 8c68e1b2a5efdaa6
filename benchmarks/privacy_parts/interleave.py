"""Round-by-round interleaving of several simulations, one thread each, timed from inside."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import read_jsonl, time_into

from fedops.core.privacy import accountant as acct
from fedops.core.rounds import sample_clients
from fedops.core.strategies.fedavg import FedAvg
from fedops.runtime import run as run_module
from fedops.runtime.driver import RoundDriver
from fedops.runtime.privacy import PrivacyRound, RoundSample
from fedops.runtime.simulate_settings import SimulateConfig
from fedops.runtime.store import RunStore
from fedops.simulation import engine
from fedops.tasks.dataset_task import task_from_data
from privacy_parts.modes import BLAS_LIMIT, MODES, OWN_COHORT, SECTIONS, blas_setter


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
    """``real``, its time added to ``section`` of the calling thread's recorder (if any)."""

    def record(seconds: float) -> None:
        rec = _recorder()
        if rec is not None:
            rec.current[section] = rec.current.get(section, 0.0) + seconds

    return time_into(real, record)


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
        dp = next((p for p in self.plugins if isinstance(p, PrivacyRound)), None)
        if dp is None:
            return
        # time the DP plug-in's calls into its mechanism on the instance itself, so the
        # mechanism stays the CentralPrivacy (or other) it is
        privacy = dp.privacy
        for name, section in PRIVACY_SECTION.items():
            if hasattr(privacy, name):
                setattr(privacy, name, _timed_section(getattr(privacy, name), section))
        rec = _recorder()
        if rec is None or rec.name not in OWN_COHORT:
            privacy.sample = _baseline_cohort(privacy, self.ctx.config.seed)  # type: ignore[method-assign]

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
        # the fit phase, plain or SecAgg+'s (a plug-in the driver's _fit calls)
        (RoundDriver, "_fit", _timed_section(RoundDriver._fit, "fit")),
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


def summarize(results: dict[str, dict[str, Any]], base: str = "none") -> dict[str, dict]:
    """Medians over rounds 2..R, paired ratios to ``base``, breakdown, final metrics."""
    out: dict[str, dict] = {}
    base_rounds = results[base]["recorder"].round_s if base in results else []
    for name in sorted(results, key=list(MODES).index):
        res = results[name]
        rec: Recorder = res["recorder"]
        rows = read_jsonl(res["run_dir"] / "metrics.jsonl")
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
        cut = 1 if len(rec.round_s) > 1 else 0  # round 1 is warm-up, if there are others
        timed, sections = rec.round_s[cut:], rec.sections[cut:]
        if timed:
            s["median_s"] = statistics.median(timed)
            for sec in SECTIONS:
                s[f"median_{sec}_s"] = statistics.median(x[sec] for x in sections)
            s["median_other_s"] = statistics.median(
                r - sum(x.values()) for r, x in zip(timed, sections, strict=True)
            )
            pairs = list(zip(timed, base_rounds[cut:], strict=False))
            if pairs:
                s["ratio"] = statistics.median(a / b for a, b in pairs)
                s["extra_s"] = statistics.median(a - b for a, b in pairs)
        out[name] = s
    return out


def data_key(cfg: SimulateConfig) -> str:
    """Simulations with equal keys get the same generated data (the model is not in it)."""
    return repr((cfg.dataset, cfg.partition, cfg.simulation.num_clients, cfg.seed))


def model_task(cfg: SimulateConfig, data: Any) -> Any:
    return task_from_data(
        data, name=cfg.dataset.name, model=cfg.model.name, hidden=cfg.model.hidden
    )

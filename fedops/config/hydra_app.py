"""``fedops simulate`` (and ``python simulations/run.py``): the Hydra application.

Config groups live in ``fedops/configs/`` (also reachable as ``configs/`` at
the repository root); their schemas are the dataclasses of
:mod:`fedops.runtime.simulate_settings`, registered here in Hydra's
ConfigStore, so composition rejects unknown keys and wrong types by name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedops.config.overrides import (
    check_known_keys,
    check_run_dirs,
    config_error_of,
    hydra_args,
    planned_jobs,
)
from fedops.runtime.settings import ConfigError
from fedops.runtime.simulate_settings import SimulateConfig, validate

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
#: scenario presets (`+scenario=NAME`), in the repository beside the package
SCENARIO_DIR = Path(__file__).resolve().parents[2] / "simulations"


def register() -> None:
    """Put the root schema in the ConfigStore (the primary YAML extends it)."""
    ConfigStore.instance().store(name="simulate_schema", node=SimulateConfig)
    # run directories are DATE-TIME-XXXX: simulations started in the same second (a shell
    # loop) got one directory and mixed their records; the suffix is fixed per process
    OmegaConf.register_new_resolver(
        "fedops_suffix", lambda: secrets.token_hex(2), use_cache=True, replace=True
    )
    # scenario presets name their task files beside them, whatever the working directory
    OmegaConf.register_new_resolver(
        "fedops_scenarios", lambda: str(SCENARIO_DIR), use_cache=True, replace=True
    )


#: a run directory holding any of these is a run's; a failed start never removes it
RUN_RECORDS = ("state.sqlite", "audit.jsonl", "checkpoints", "summary.json")
#: what Hydra and this app write before a run starts: removed again when it never does
START_FILES = (".hydra", "config.yaml", "fedops_simulate.log", "multirun.yaml")

#: one row per job of this process's sweep, printed as a table when the sweep ends
_SWEEP_ROWS: list[dict[str, Any]] = []
#: the keys this process's sweep varies (its table shows those)
_SWEPT: set[str] = set()


def _refused(run_dir: Path, message: str, status: int) -> SystemExit:
    """A start refused before its run began: one line, and no empty run directory left
    behind (a directory holding a run's records, e.g. one being resumed, is kept)."""
    print(f"fedops simulate: error: {message}", file=sys.stderr)
    if run_dir.is_dir() and not any((run_dir / name).exists() for name in RUN_RECORDS):
        for name in START_FILES:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        _remove_empty(run_dir)
    return SystemExit(status)


def _remove_empty(run_dir: Path) -> None:
    """``run_dir`` and the default parents Hydra made for it (``runs/simulate``), while
    empty and below the working directory."""
    here = Path.cwd().resolve()
    for path in (run_dir, run_dir.parent, run_dir.parent.parent):
        resolved = path.resolve()
        if resolved == here or here not in resolved.parents:
            return
        try:
            path.rmdir()  # only if nothing else is in it
        except OSError:
            return


def _run(cfg: DictConfig) -> float | None:
    from fedops.runtime.audit.log_file import AuditError
    from fedops.runtime.store import StoreError
    from fedops.simulation.engine import run_simulation  # torch import: only when running
    from fedops.tasks.contract import TaskError

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        settings = _settings_of(cfg)
        validate(settings)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        # some settings can only be checked against the task's data (e.g. its classes)
        summary = run_simulation(settings, run_dir)
    except ConfigError as exc:
        raise _refused(run_dir, f"{exc.key}: {exc.message}", 2) from exc
    except (StoreError, AuditError) as exc:  # the run directory cannot be used: say why
        raise _refused(run_dir, str(exc), 1) from exc
    except TaskError as exc:  # the task's own mistake, named
        raise _refused(run_dir, f"task: {exc}", 2) from exc
    except Exception as exc:  # the task's code (or fedops) failed: one line, the rest on disk
        trace = run_dir / "error.log"
        trace.write_text(traceback.format_exc())
        print(
            f"fedops simulate: error: the run failed: {type(exc).__name__}: {exc} "
            f"(traceback in {trace})",
            file=sys.stderr,
        )
        raise SystemExit(1) from exc
    last = summary.get("final_metrics", {})
    # under DP the sites' evaluation is withheld: the coordinator's own data then speaks
    name = "eval_accuracy" if "eval_accuracy" in last else "global_accuracy"
    final = last.get(name)
    print(
        f"simulation {summary['run_id']} {summary['status']}: {name}="
        f"{final if final is None else round(final, 4)} after {summary['rounds_completed']} "
        f"rounds; results in {run_dir}"
    )
    _point_latest(run_dir)
    _sweep_row(run_dir, summary, name, final)
    if "privacy" in summary:
        print(f"privacy: {summary['privacy']}")
    if "stop_reason" in summary:
        print(summary["stop_reason"])
    return final


def _settings_of(cfg: DictConfig) -> SimulateConfig:
    """The typed settings of a composed config, none of its keys outside the schema."""
    check_known_keys(cfg, SimulateConfig())
    settings = OmegaConf.to_object(cfg)
    assert isinstance(settings, SimulateConfig)
    return settings


def _point_latest(run_dir: Path) -> None:
    """``runs/simulate/latest`` -> this run (single runs only; a sweep has its own folder)."""
    from hydra.types import RunMode

    if HydraConfig.get().mode != RunMode.RUN:
        return
    link = run_dir.parent / "latest"
    aside = run_dir.parent / f".latest-{secrets.token_hex(4)}"
    try:
        os.symlink(run_dir.name, aside)
        os.replace(aside, link)  # atomic: another run finishing at once wins or loses whole
    except OSError:
        aside.unlink(missing_ok=True)


def _sweep_row(run_dir: Path, summary: dict[str, Any], metric: str, final: Any) -> None:
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    row = {
        "job": hydra_cfg.job.num,
        "overrides": " ".join(hydra_cfg.overrides.task) or "(defaults)",
        "status": summary["status"],
        "rounds": summary["rounds_completed"],
        metric: final,
        "epsilon": summary.get("final_metrics", {}).get("epsilon"),
        "run_dir": str(run_dir),
    }
    _SWEEP_ROWS.append(row)


def sweep_table(rows: Sequence[dict[str, Any]]) -> str:
    """The jobs of a sweep side by side: what each changed and how it ended."""
    columns = list(dict.fromkeys(k for row in rows for k in row if k != "run_dir"))
    if all(row.get("epsilon") is None for row in rows):
        columns.remove("epsilon")

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    table = [columns] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in table]
    return "\n".join(line.rstrip() for line in lines)


def _print_sweep() -> None:
    if not _SWEEP_ROWS:
        return
    rows = sorted(_SWEEP_ROWS, key=lambda row: row["job"])
    # the column shows what the jobs vary (the swept keys), not what they share; one job
    # alone shares nothing (it shows all its overrides)
    shared = set.intersection(*(set(row["overrides"].split()) for row in rows))
    for row in rows:
        each = row["overrides"].split()
        if _SWEPT:
            each = [o for o in each if _key_of(o) in _SWEPT]
        elif len(rows) > 1:
            each = [o for o in each if o not in shared]
        row["overrides"] = " ".join(each) or "(as the others)"
    sweep_dir = Path(rows[0]["run_dir"]).parent
    table = sweep_table(rows)
    print(f"\nsweep of {len(rows)} jobs ({sweep_dir}):\n{table}")
    with contextlib.suppress(OSError):
        (sweep_dir / "sweep.txt").write_text(table + "\n")
    _SWEEP_ROWS.clear()


def _key_of(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def compose_settings(*overrides: str) -> SimulateConfig:
    """The typed settings ``fedops simulate OVERRIDES`` composes (scenario presets
    included), not yet validated: for notebooks, scripts and tests. A key Hydra refuses,
    or one outside the schema, raises :class:`ConfigError` naming it."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    register()
    given = any(_key_of(o) == "hydra.searchpath" for o in overrides)
    search = [] if given or not SCENARIO_DIR.is_dir() else [_scenario_path()]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        try:
            cfg = compose(config_name="simulate", overrides=[*search, *overrides])
        except (HydraException, OmegaConfBaseException) as exc:
            raise config_error_of(exc) from None
    return _settings_of(cfg)


def _scenario_path() -> str:
    return f"hydra.searchpath=[file://{SCENARIO_DIR}]"


def _check_jobs(argv: Sequence[str]) -> None:
    """Every job ``fedops simulate ARGV`` would run, composed and checked before the first
    one starts (a sweep's bad value stops it whole, not at its job); :class:`ConfigError`."""
    args = hydra_args(argv)
    _SWEPT.clear()
    if args is None:  # --help, another config ...: Hydra's own
        return
    check_run_dirs(args.overrides)
    jobs, swept = planned_jobs(args.overrides, args.multirun)
    _SWEPT.update(swept)
    for job in jobs:
        settings = compose_settings(*job)
        if not args.cfg:  # --cfg prints the config as composed, whatever its values
            validate(settings)


def simulate(*overrides: str, run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Run ``fedops simulate OVERRIDES`` in this process, in ``run_dir``; return the summary.

    For notebooks and scripts: the same settings, checks and engine as the command
    (a bad setting raises :class:`ConfigError` naming the key), without its printing.
    """
    from fedops.simulation.engine import run_simulation  # torch import: only when running

    return run_simulation(validate(compose_settings(*overrides)), Path(run_dir))


def simulate_main(argv: Sequence[str]) -> int:
    """Run the Hydra app with ``argv`` as its overrides; return an exit status."""
    register()
    app = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="simulate")(_run)
    saved = sys.argv
    extra = []
    if SCENARIO_DIR.is_dir() and not any(a.startswith("hydra.searchpath") for a in argv):
        extra = [_scenario_path()]
    try:
        _check_jobs(argv)
    except ConfigError as exc:  # as the run's own checks would say it, before any job
        print(f"fedops simulate: error: {exc.key}: {exc.message}", file=sys.stderr)
        return 2
    sys.argv = ["fedops simulate", *argv, *extra]
    # Hydra points the root logger at the streams of the moment; an in-process caller
    # (a notebook, a test) keeps its own logging once the run is over, not handlers on
    # streams that may since have closed
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    _SWEEP_ROWS.clear()
    try:
        app()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        _print_sweep()
        sys.argv = saved
        root.handlers[:] = handlers
        root.setLevel(level)
    return 0

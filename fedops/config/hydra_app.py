"""``fedops simulate`` (and ``python simulations/run.py``): the Hydra application.

Config groups live in ``fedops/configs/`` (also reachable as ``configs/`` at
the repository root); their schemas are the dataclasses of
:mod:`fedops.runtime.simulate_settings`, registered here in Hydra's
ConfigStore, so composition rejects unknown keys and wrong types by name.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

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


def _run(cfg: DictConfig) -> float | None:
    from fedops.runtime.audit import AuditError
    from fedops.runtime.store import StoreError
    from fedops.simulation.engine import run_simulation  # torch import: only when running
    from fedops.tasks.base import TaskError

    settings = OmegaConf.to_object(cfg)
    assert isinstance(settings, SimulateConfig)
    try:
        validate(settings)
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        # some settings can only be checked against the task's data (e.g. its classes)
        summary = run_simulation(settings, run_dir)
    except ConfigError as exc:
        print(f"fedops simulate: error: {exc.key}: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from exc
    except (StoreError, AuditError) as exc:  # the run directory cannot be used: say why
        print(f"fedops simulate: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc
    except TaskError as exc:  # the task's own mistake, named
        print(f"fedops simulate: error: task: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
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
    if "privacy" in summary:
        print(f"privacy: {summary['privacy']}")
    if "stop_reason" in summary:
        print(summary["stop_reason"])
    return final


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


def simulate_main(argv: Sequence[str]) -> int:
    """Run the Hydra app with ``argv`` as its overrides; return an exit status."""
    register()
    app = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="simulate")(_run)
    saved = sys.argv
    extra = []
    if SCENARIO_DIR.is_dir() and not any(a.startswith("hydra.searchpath") for a in argv):
        extra = [f"hydra.searchpath=[file://{SCENARIO_DIR}]"]
    sys.argv = ["fedops simulate", *argv, *extra]
    # Hydra points the root logger at the streams of the moment; an in-process caller
    # (a notebook, a test) keeps its own logging once the run is over, not handlers on
    # streams that may since have closed
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        app()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
        root.handlers[:] = handlers
        root.setLevel(level)
    return 0

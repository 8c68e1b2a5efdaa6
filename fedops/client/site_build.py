"""A fedops task as a site: the task, the site's data slice, and its policy's limits."""

from __future__ import annotations

from fedops.core.training import TrainConfig
from fedops.runtime.settings import ClientConfig
from fedops.tasks.contract import Task
from fedops.tasks.site import Site
from fedops.tasks.site_policy import SitePolicy


def task_site(cfg: ClientConfig, task: Task, policy: SitePolicy) -> Site:
    """The site ``fedops client`` runs; its privacy ledger is kept in ``cfg.run_dir`` (a
    standing site's root, shared by all its runs, so ε composes across them)."""
    return Site(
        task,
        site=cfg.site,
        num_sites=cfg.num_sites,
        train_config=TrainConfig(),  # unused: every training task brings the run's settings
        train_caps=policy.train_caps,
        max_epsilon=policy.max_epsilon,
        max_run_epsilon=policy.max_run_epsilon,
        max_delta=policy.max_delta,
        public_records=policy.dp_public_records,
        report_limits=policy.report_limits,
        ledger_dir=cfg.run_dir,  # the site's privacy ledger survives restarts there
    )

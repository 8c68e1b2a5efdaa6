"""What a site runs under: its policy, the name it registers as, and what it logs of both.

Split from :mod:`fedops.client.agent` (which re-exports :func:`site_policy` and
:func:`site_name`) so that the rules a site holds the coordinator to read in one
place, apart from the loop that serves tasks: the CLI builds a site's policy before
any agent exists, and the agent's signed log records it before any task is taken.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fedops.consortium.kit import Kit
from fedops.runtime.settings import ClientConfig
from fedops.tasks.site_policy import SECAGG_RULES, TRAIN_CAPS, SitePolicy


def site_policy(cfg: ClientConfig, kit: Kit | None) -> SitePolicy:
    """The site's policy: its kit's, with the flags the operator gave taking precedence."""
    return SitePolicy.from_mapping(
        kit.policy if kit is not None else {},
        max_epsilon=cfg.max_epsilon,
        max_run_epsilon=cfg.max_run_epsilon,
        max_delta=cfg.dp_delta,
        dp_public_records=cfg.dp_public_records,
        require_secagg=cfg.require_secagg,
        monitoring_min_count=cfg.monitoring_min_count,
        monitoring_max_cells=cfg.monitoring_max_cells,
        max_rounds=cfg.max_rounds,
        allowed_tasks=tuple(cfg.allowed_task or ()),
        consent_file=cfg.consent_file,
        **{rule: getattr(cfg, rule) for rule in SECAGG_RULES},  # the --secagg-* flags
        **{cap: getattr(cfg, cap) for cap in TRAIN_CAPS},  # --max-epochs ...
    )


def site_name(cfg: ClientConfig, kit: Kit | None) -> str:
    """The name a site registers, and signs its audit log, under."""
    if kit is not None:
        return kit.name
    return cfg.site_name or f"site-{cfg.site}"


def started_policy(
    p: SitePolicy,
    cfg: ClientConfig,
    *,
    share_monitoring: bool,
    privacy_ledger: Path | None,
    secagg_identity: bool,
) -> dict[str, Any]:
    """The policy as the site's ``site_started`` audit entry records it: what the site
    promised itself, signed before it took any task, so that a later dispute can check."""
    return {
        "require_secagg": p.require_secagg,
        "share_evaluation": cfg.share_evaluation,
        "share_monitoring": share_monitoring,
        "max_epsilon": p.max_epsilon,
        "max_run_epsilon": p.max_run_epsilon,
        "max_delta": p.max_delta,
        "dp_public_records": p.dp_public_records,
        "monitoring": dataclasses.asdict(p.report_limits),
        "privacy_ledger": privacy_ledger,
        "max_rounds": p.max_rounds,
        "allowed_tasks": list(p.allowed_tasks),
        "consent": p.consent,
        "consent_file": p.consent_file,
        "secagg": dataclasses.asdict(p.secagg),
        "train_caps": dataclasses.asdict(p.train_caps),
        "secagg_identity": secagg_identity,
    }

"""``fedops client --flower-app``: the site a Flower app runs as, built from the flags.

Kept beside :mod:`fedops.client.startup` (and out of the CLI) because it is a decision
about the site's setup: a privacy rule the site's policy sets that a Flower app cannot
keep (local DP caps: the app trains in its own loop) stops the agent before it starts,
naming the flag, instead of a site that would decline every round.
"""

from __future__ import annotations

from fedops.core.training import TrainConfig
from fedops.runtime.settings import ClientConfig
from fedops.tasks.flower_app import LOCAL_DP_REFUSAL, FlowerAppError, load_flower_app
from fedops.tasks.flower_site import FlowerSite
from fedops.tasks.site_policy import SitePolicy

__all__ = ["flower_site"]


def flower_site(cfg: ClientConfig, policy: SitePolicy) -> FlowerSite:
    """The site running ``cfg.flower_app``; its code (and ``--flower-initial``'s) is
    checked against the policy's allowed digests before it is imported."""
    for flag, value in (
        ("--max-epsilon", policy.max_epsilon),
        ("--dp-public-records", policy.dp_public_records),
    ):
        if value is not None:
            raise FlowerAppError(
                f"{flag} (or the kit's policy) with --flower-app: {LOCAL_DP_REFUSAL}"
            )
    assert cfg.flower_app is not None
    app = load_flower_app(cfg.flower_app, initial=cfg.flower_initial, allowed=policy.allowed_tasks)
    if app.message_api and app.initial is None:  # registering sends the model's specs
        raise FlowerAppError(
            f"{cfg.flower_app} is a Message API ClientApp, which has no first model of its "
            "own (in Flower its ServerApp supplies initial_arrays): pass --flower-initial "
            "module:attr, a callable that builds it"
        )
    return FlowerSite(
        app,
        site=cfg.site,
        num_sites=cfg.num_sites,
        train_config=TrainConfig(),  # unused: every training task brings the run's settings
        seed=cfg.data_seed,
        ledger_dir=cfg.run_dir,
        train_caps=policy.train_caps,
    )

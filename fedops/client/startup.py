"""What a site checks and warns about as its agent starts, before it takes any task.

Kept apart from :mod:`fedops.client.agent` (the loop that serves tasks) because each is
a decision about the site's own setup: a privacy cap that a restart would silently
reset is refused, and a setting that leaks more than the operator may think is named.
"""

from __future__ import annotations

import logging

from fedops.consortium.crl import CRL_DELIVERED, DeliveredCrl
from fedops.consortium.kit import Kit
from fedops.runtime.settings import ClientConfig
from fedops.tasks.local_site import LocalSite
from fedops.tasks.site_policy import PolicyViolation, SitePolicy

__all__ = ["check_ledger", "delivered_crl", "warn_count_shows", "warn_without_identities"]

log = logging.getLogger("fedops.client")


def check_ledger(cfg: ClientConfig, site: LocalSite, policy: SitePolicy) -> None:
    """A privacy cap holds across restarts only if the site's ledger is on disk."""
    if site.ledger.path is not None:
        return
    if policy.max_epsilon is not None:
        raise PolicyViolation(
            f"max_epsilon {policy.max_epsilon:g} needs --run-dir: this site's privacy ledger "
            "is kept there, and without it a restarted agent would count its ε from zero"
        )
    log.warning(
        "no --run-dir: this site's privacy ledger (local DP) is kept in memory and "
        "forgotten when the agent stops"
    )


def delivered_crl(kit: Kit | None) -> DeliveredCrl | None:
    """The CRL the coordinator delivers, kept beside the kit (a kit site only)."""
    if not kit:
        return None
    return DeliveredCrl(kit.ca_cert, state_path=kit.directory / CRL_DELIVERED, floor=kit.crl_floor)


def warn_count_shows(num_train_examples: int) -> None:
    log.warning(
        "local DP without --dp-public-records: the number of DP-SGD steps a round "
        "takes, and so the noise in each update, follows this site's record count "
        "(%d); set --dp-public-records to plan with a public count and hide it",
        num_train_examples,
    )


def warn_without_identities() -> None:
    log.warning(
        "secure aggregation without site identities: the coordinator could pose as "
        "every other site, so this site is protected from an honest-but-curious "
        "coordinator only; use a consortium kit (or --identity-key and --trusted-keys) "
        "for protection from a malicious one"
    )

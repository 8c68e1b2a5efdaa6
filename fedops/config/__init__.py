"""User-facing configuration: the CLI's and (with Hydra) the simulator's front door.

The schemas live beside the runtimes that consume them
(:mod:`fedops.runtime.settings`); this layer maps what the user typed onto
them and names the offending flag or key when a value is refused.
"""

from fedops.runtime.rules import SECAGG_CLIP, SECAGG_MODES
from fedops.runtime.schema import (
    SECTIONS,
    ClientTrainConfig,
    MonitoringConfig,
    PrivacyConfig,
    SecAggConfig,
    StrategyConfig,
    flag_of,
    flagged,
)
from fedops.runtime.settings import (
    FLAG_NAMES,
    ClientConfig,
    ConfigError,
    CoordinatorConfig,
)

__all__ = [
    "FLAG_NAMES",
    "SECAGG_CLIP",
    "SECAGG_MODES",
    "SECTIONS",
    "ClientConfig",
    "ClientTrainConfig",
    "ConfigError",
    "CoordinatorConfig",
    "MonitoringConfig",
    "PrivacyConfig",
    "SecAggConfig",
    "StrategyConfig",
    "flag_of",
    "flagged",
]

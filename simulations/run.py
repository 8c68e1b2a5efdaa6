"""Run a simulation: ``python simulations/run.py [hydra overrides]`` == ``fedops simulate ...``.

Scenario presets live beside this file; pick one with ``--config-dir simulations
+scenario=NAME`` or copy its overrides.
"""

import sys

from fedops.config.hydra_app import simulate_main

if __name__ == "__main__":
    sys.exit(simulate_main(sys.argv[1:]))

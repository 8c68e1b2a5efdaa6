"""The local optimizers a site can train with, by name.

Apart from :mod:`fedops.core.training` so that checking a setting (the CLI, the
Hydra schema) does not import torch: a ``fedops --help`` or ``fedops audit``
starts in a fraction of the time.
"""

OPTIMIZERS = ("sgd", "adam")

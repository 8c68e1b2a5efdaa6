"""Shared setup for the unit suite.

The unit tests train tiny models whose ops are far too small to gain from
intra-op parallelism; with PyTorch's default thread pool they spend most of
their time in thread spin-waits, several times slower on a busy 2-core
machine. One thread keeps the whole suite fast and changes no result a test
depends on (every determinism test compares runs within one process).
"""

import torch

torch.set_num_threads(1)

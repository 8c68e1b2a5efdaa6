"""Parts of ``benchmarks/privacy.py``: the modes, the workloads, the round-by-round
interleaving of their simulations, the standalone timings and the report."""

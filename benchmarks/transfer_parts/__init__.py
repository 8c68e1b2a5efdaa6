"""Parts of ``benchmarks/transfer.py``: the shared sizes and model, the client worker, the
per-stage costs."""

"""Parts of ``benchmarks/vs_flower.py``: what both frameworks' children share, each side's
child, and the process-tree memory sampler. Ray's workers import the Flower side by this
package's name (the child puts ``benchmarks/`` on PYTHONPATH)."""

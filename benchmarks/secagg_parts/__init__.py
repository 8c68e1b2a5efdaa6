"""Parts of ``benchmarks/secagg.py``: the workload, the fedops round and its crypto floor,
Flower in-process and on Ray, and the report. Ray's workers import ``ray_side`` by this
package's name (the child puts ``benchmarks/`` on PYTHONPATH)."""

"""Start-up: the CPU a ``fedops`` process spends before its first message, side by side.

    python benchmarks/startup.py                          # this checkout
    python benchmarks/startup.py --baseline /tmp/base     # and another checkout, with ratios

Every end-to-end test and every site agent pays this: a coordinator with a task, a
site agent until it dials (an unreachable coordinator, one attempt), ``--help``, a
flag error. Each command runs ``--repeats`` times in a fresh interpreter; the median
of user + system CPU seconds (``resource.getrusage`` of the child) is reported.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import cpu_seconds, make_parser

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "fedops --help": ["--help"],
    "flag error": ["coordinator", "--rounds", "0"],
    "site agent until it dials": [
        "client", "--task", "digits", "--site", "0", "--num-sites", "2",
        "--coordinator", "127.0.0.1:9", "--max-retries", "0",
    ],
    "audit verify --help": ["audit", "verify", "--help"],
}  # fmt: skip


def run_cpu_seconds(tree: Path, args: list[str]) -> float:
    """User + system CPU of one ``python -m fedops ARGS`` run against ``tree``."""
    before = cpu_seconds(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory() as cwd:
        subprocess.run(
            [sys.executable, "-m", "fedops", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            timeout=120,
        )
    return cpu_seconds(resource.RUSAGE_CHILDREN) - before


def measure(tree: Path, repeats: int) -> dict[str, float]:
    return {
        name: statistics.median(run_cpu_seconds(tree, args) for _ in range(repeats))
        for name, args in COMMANDS.items()
    }


def main() -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--baseline", type=Path, help="another checkout of fedops to compare")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    started = time.monotonic()
    here = measure(ROOT, args.repeats)
    base = measure(args.baseline, args.repeats) if args.baseline else None
    print(
        f"{'command':<28} {'this (CPU s)':>12}"
        + (f" {'baseline':>10} {'ratio':>7}" if base else "")
    )
    for name, seconds in here.items():
        line = f"{name:<28} {seconds:>12.2f}"
        if base:
            line += f" {base[name]:>10.2f} {base[name] / seconds:>6.1f}x"
        print(line)
    print(f"({args.repeats} runs each, median; {time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

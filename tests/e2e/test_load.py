"""Many real agents at once: nothing lost, nothing counted twice.

Runs ``benchmarks/load.py`` (the real ``fedops coordinator`` process and real
``Agent`` objects, many per process, each with its own channel) at a size a
2-core CI machine handles in about a minute; the benchmark itself runs the
full thousand agents. What is asserted is behaviour, not speed: every round
completes with every agent, and each round's committed participants are
exactly the agents whose journals say their update was accepted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
AGENTS = 200
ROUNDS = 2


def test_200_concurrent_agents_lose_no_update(tmp_path: Path):
    out = tmp_path / "figures.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "load.py"), "--agents", str(AGENTS)]
    command += ["--rounds", str(ROUNDS), "--processes", "2", "--out", str(tmp_path / "run")]
    run = subprocess.run(
        [*command, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["rounds_completed"] == ROUNDS, figures
    assert figures["updates_per_round"] == [AGENTS] * ROUNDS, figures
    assert figures["lost_updates"] == 0, figures
    assert figures["committed_without_site_record"] == 0, figures
    assert figures["agent_processes_ok"] == figures["agent_processes"], run.stderr[-3000:]
    assert run.returncode == 0, run.stdout[-3000:]
    # every agent joined (a registration whose reply came too late may add a second node
    # for its site; such a node never polls, so it is never given work: see test above)
    audit = (tmp_path / "run" / "coordinator" / "audit.jsonl").read_text().splitlines()
    joined = [json.loads(line) for line in audit if '"node_joined"' in line]
    assert len({j["payload"]["site"] for j in joined}) == AGENTS

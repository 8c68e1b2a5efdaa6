"""``fedops run simulate RUN.yaml [OVERRIDES]``: the run file a federation would run, simulated.

A run file (:mod:`fedops.cli.run_spec`) names the coordinator's settings; each one that is
also a simulation's becomes its Hydra key (a schema section's field is both by
construction; the rest pair through :data:`fedops.runtime.schema_table.SAME_SETTING`), so
the simulated run trains, aggregates and protects exactly as the deployed one will. A
setting of the network only (``min_clients``, timeouts) has nothing to do in one process:
it is named on screen, with why, never dropped silently. The file is checked by the
coordinator's rules first, so it is refused here exactly as ``fedops run submit`` would.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from fedops.cli.run_spec import load_run_file, parse_run_spec, run_flags
from fedops.config import SECTIONS, flag_of, flagged
from fedops.runtime.run_queue import SpecError
from fedops.runtime.schema_table import DEPLOYMENT_ONLY, SAME_SETTING

#: a value Hydra takes literally in an override
PLAIN = re.compile(r"[A-Za-z0-9._+/:@-]{1,500}")


def _keys_of_flags() -> dict[str, str]:
    """Each coordinator flag that a simulation has too -> its Hydra key."""
    keys = {
        flag_of(f"{prefix}.{spec.name}"): f"{prefix}.{spec.name}"
        for prefix, section in SECTIONS.items()
        for spec in flagged(section)
    }
    return {**keys, **SAME_SETTING}


def simulate_overrides(text: str) -> tuple[list[str], dict[str, str]]:
    """``(overrides, not_simulated)``: the run file's settings as Hydra overrides, and its
    deployment-only settings -> why a simulation has no such setting."""
    parse_run_spec(text, run_dir=Path("(check)"), address="127.0.0.1:0", kit=None)
    keys = _keys_of_flags()
    overrides: list[str] = []
    skipped: dict[str, str] = {}
    for flag, value in _pairs(run_flags(load_run_file(text))):
        key = keys.get(flag)
        if key is None:
            skipped[flag.removeprefix("--").replace("-", "_")] = DEPLOYMENT_ONLY.get(
                flag, "a deployment's setting"
            )
            continue
        if not PLAIN.fullmatch(value):  # Hydra reads ${...}, a,b, [..] and quotes itself
            raise SpecError(
                f"{key}: {value[:60]!r}: fedops run simulate takes plain values only "
                "(letters, digits and . _ - + / : @)"
            )
        overrides.append(f"{key}={value}")
    return overrides, skipped


def _pairs(argv: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(flag, value)`` of a flag list; a switch's value is ``true``."""
    index = 0
    while index < len(argv):
        flag = argv[index]
        has_value = index + 1 < len(argv) and not argv[index + 1].startswith("--")
        yield flag, (argv[index + 1] if has_value else "true")
        index += 2 if has_value else 1


def run_simulate_command(config: Path, extra: Sequence[str]) -> int:
    from fedops.config.hydra_app import simulate_main

    try:
        overrides, skipped = simulate_overrides(config.read_text())
    except (OSError, UnicodeDecodeError, SpecError) as exc:
        print(f"fedops run simulate: error: {exc}", file=sys.stderr)
        return 2
    if skipped:
        why = "; ".join(f"{key} ({reason})" for key, reason in skipped.items())
        print(f"not simulated, a deployment's only: {why}", file=sys.stderr)
    print(f"fedops simulate {' '.join([*overrides, *extra])}", file=sys.stderr)
    return simulate_main([*overrides, *extra])

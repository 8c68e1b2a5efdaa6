"""What a fresh interpreter has imported after running some code: for tests that keep heavy
or unneeded modules out of a process's start-up (every one stays resident for its life)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable


def loaded_after(code: str, modules: Iterable[str]) -> list[str]:
    """Those of ``modules`` (or their submodules) in ``sys.modules`` after ``code`` ran in a
    new interpreter; AssertionError with its stderr if ``code`` failed."""
    # the probe itself imports nothing beyond sys (always loaded): it cannot be the answer
    probe = (
        f"{code}\nimport sys\nwanted = {sorted(modules)!r}\n"
        "print(sorted(m for m in sys.modules "
        "if any(m == w or m.startswith(w + '.') for w in wanted)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return list(ast.literal_eval(done.stdout.strip().splitlines()[-1]))

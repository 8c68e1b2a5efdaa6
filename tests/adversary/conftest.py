from __future__ import annotations

import sys
from pathlib import Path

# procs.py (process helpers) lives with the end-to-end tests; harness.py is here
HERE = Path(__file__).parent
for path in (HERE, HERE.parent / "e2e"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

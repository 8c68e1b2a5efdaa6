"""The command line parses and reports before it imports torch.

``fedops --help``, the audit, consortium, admin and report tools and every flag
error take a fraction of a second because parsing needs no torch (nor
scikit-learn); only a command that trains or builds a model imports it.
"""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_parsing_every_command_imports_no_torch():
    code = (
        "import sys\n"
        "from fedops.cli.parser import build_parser\n"
        "from fedops.cli.configs import config_of as _config\n"
        "p = build_parser()\n"
        "_config(p.parse_args(['coordinator', '--rounds', '3', '--mu', '0.1', "
        "'--strategy', 'fedprox', '--lr', '0.1', '--lr-decay', '0.9']))\n"
        "_config(p.parse_args(['client', '--task', 'digits', '--site', '0', "
        "'--num-sites', '2', '--max-epochs', '3', '--max-lr', '0.2']))\n"
        "p.parse_args(['audit', 'verify', 'x'])\n"
        "heavy = sorted(m for m in ('torch', 'sklearn', 'opacus', 'hydra') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr


def test_a_flag_error_is_named_without_torch():
    code = (
        "import sys\n"
        "from fedops.cli import main\n"
        "try:\n"
        "    main(['coordinator', '--rounds', '0'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 2, exc.code\n"
        "assert 'torch' not in sys.modules\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert "--rounds: must be >= 1" in done.stderr

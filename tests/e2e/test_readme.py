"""The README's commands work as written (issue 18): a README change that breaks one fails CI.

Every ```` ```bash ```` block of the README carries a marker on the line above it:

- ``<!-- readme-test: run -->``: the block runs as a bash script, as written, in a temporary
  directory laid out like the repository root (``simulations/`` linked in, ``my_task.py``
  written from the README's own task listing); background jobs (``&``) must exit 0 too.
- ``<!-- readme-test: terminals -->``: "each command in its own terminal": every line starts
  at once as its own process, and every one must exit 0.
- ``<!-- readme-test: parse: WHY -->``: not run (WHY says why: it installs, it is this suite,
  it is a template with ``...``); its ``fedops`` commands are still checked below.

Every ``fedops`` command of every block, run or not, must parse: flags by fedops' own argument
parser, ``fedops simulate`` overrides by composing and validating the Hydra config. The
deployment blocks (fixed ports 8765 and 8443, as the README says) run one after another in
one directory, as a newcomer would run them.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedops.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- readme-test: (run|terminals|parse: [^>]+?) -->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
PIN = "ab" * 32  # a well-formed CA fingerprint for the parse check
BLOCK_TIMEOUT_S = 420


@dataclass(frozen=True)
class Block:
    line: int  # where the fence opens, for messages
    kind: str  # run | terminals | parse
    body: str

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def blocks(text: str | None = None) -> list[Block]:
    text = README.read_text() if text is None else text
    found = []
    for match in FENCE.finditer(text):
        if match.group(1) != "bash":
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(before.strip())
        line = text.count("\n", 0, match.start()) + 1
        kind = marker.group(1).split(":")[0] if marker else "unmarked"
        found.append(Block(line, kind, match.group(2)))
    return found


def logical_lines(body: str) -> list[str]:
    """Lines with ``\\`` continuations joined; comments, blank lines and here-documents
    (``<<'END'`` .. ``END``) dropped."""
    lines, heredoc = [], None
    for raw in body.replace("\\\n", " ").splitlines():
        if heredoc is not None:
            heredoc = None if raw.strip() == heredoc else heredoc
            continue
        line = "" if raw.lstrip().startswith("#") else raw.split(" #", 1)[0].strip()
        if line:
            lines.append(line)
            end = re.search(r"<<-?\s*'?(\w+)'?", line)
            heredoc = end.group(1) if end else None
    return lines


SEPARATORS = {"|", "||", "&", "&&", ";", ";;", "(", ")", ");", "do", "done", "then", "fi"}


def fedops_commands(body: str) -> list[list[str]]:
    """Every ``fedops ...`` (and ``python simulations/run.py ...``) command's arguments,
    with shell variables given placeholder values and ``...`` placeholders dropped."""
    commands = []
    for line in logical_lines(body):
        lexer = shlex.shlex(
            line.replace("$PIN", PIN).replace("$p", "bank-a"), posix=True, punctuation_chars=True
        )
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token not in SEPARATORS:
                words.append(token)
                continue
            for start, word in enumerate(words):
                rest = [w for w in words[start + 1 :] if w != "..."]
                if word == "fedops":
                    commands.append(rest)
                    break
                if word.endswith("simulations/run.py"):
                    commands.append(["simulate", *rest])
                    break
            words = []
    return commands


def check_simulate(overrides: list[str]) -> None:
    from fedops.config.hydra_app import compose_settings
    from fedops.runtime.simulate_settings import validate

    kept, skip = [], False
    for word in overrides:  # Hydra's own flags are not overrides
        if skip:
            skip = False
        elif word in ("-m", "--multirun"):
            pass
        elif word in ("--cfg", "-c"):
            skip = True
        else:
            kept.append(word.split(",")[0] if "=" in word else word)  # a sweep's first value
    settings = compose_settings(*kept)
    validate(settings)


def check_command(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    if args[:1] == ["simulate"]:
        check_simulate(args[1:])
        return
    try:
        build_parser().parse_args(args)
    except SystemExit as exc:
        if exc.code != 0:
            raise AssertionError(capsys.readouterr().err) from None


def test_every_bash_block_is_marked():
    unmarked = [b.name for b in blocks() if b.kind == "unmarked"]
    assert unmarked == [], "mark each with <!-- readme-test: run|terminals|parse: WHY -->"


def test_the_block_reader_finds_markers_commands_and_continuations():
    text = (
        "<!-- readme-test: run -->\n```bash\nfedops simulate rounds=2 \\\n    seed=3   # c\n"
        "PIN=$(fedops consortium init c.yaml --out ca | sed -n 's/x//p')\n```\n"
        "```bash\nls\n```\n"
    )
    first, second = blocks(text)
    assert (first.kind, second.kind) == ("run", "unmarked")
    assert fedops_commands(first.body) == [
        ["simulate", "rounds=2", "seed=3"],
        ["consortium", "init", "c.yaml", "--out", "ca"],
    ]


@pytest.mark.parametrize("block", blocks(), ids=lambda b: b.name)
def test_every_fedops_command_of_the_readme_parses(block, capsys):
    commands = fedops_commands(block.body)
    for args in commands:
        check_command(args, capsys)


def test_a_renamed_flag_or_key_fails_the_parse_check(capsys):
    with pytest.raises(AssertionError, match="unrecognized arguments: --roundz"):
        check_command(["coordinator", "--roundz", "3"], capsys)
    with pytest.raises(Exception, match="roundz"):
        check_command(["simulate", "roundz=3"], capsys)
    with pytest.raises(Exception, match="rounds"):
        check_command(["simulate", "rounds=0"], capsys)


# --- running the blocks ------------------------------------------------------------------


def _workdir(tmp_path: Path) -> Path:
    """A directory laid out like the repository root, without its runs."""
    (tmp_path / "simulations").symlink_to(ROOT / "simulations")
    task = re.search(r"```python\n(# my_task\.py\n.*?)```", README.read_text(), re.S)
    assert task is not None, "the README's my_task.py listing"
    (tmp_path / "my_task.py").write_text(task.group(1))
    return tmp_path


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # `fedops` and `python` of this environment
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _finish(procs: list[tuple[str, subprocess.Popen[str]]], block: Block, cwd: Path) -> None:
    failed = []
    for what, proc in procs:
        try:
            out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            failed.append(f"$ {what}\n(still running after {BLOCK_TIMEOUT_S} s)\n{out[-3000:]}")
            continue
        if proc.returncode != 0:
            failed.append(f"$ {what}\n(exit {proc.returncode})\n{out[-3000:]}")
    for _, proc in procs:  # whatever a failure left running
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not failed, f"{block.name} in {cwd}:\n" + "\n".join(failed)


def _start(script: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "-c", script],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills every job it started
    )


def script(body: str) -> str:
    """The block as a script whose background jobs must succeed too, not only its last
    command: each ``&`` line's pid is kept and waited on by pid at the end (``jobs -p``
    forgets a job that already ended, and a coordinator refusing to start ends at once)."""
    waits = 'for pid in "${__bg[@]}"; do wait "$pid" || exit $?; done; __bg=()'
    lines = []
    for line in body.splitlines():
        bare = line.split(" #", 1)[0].rstrip()
        if bare.strip() == "wait":  # as written, but a job that failed fails the block
            lines.append(waits)
            continue
        lines.append(line)
        if bare.endswith("&") and not bare.endswith("&&"):
            lines.append('__bg+=("$!")')
    return "\n".join(["set -eo pipefail", "__bg=()", *lines, waits]) + "\n"


def run_block(block: Block, cwd: Path) -> None:
    if block.kind == "terminals":
        procs = [(line, _start(line, cwd)) for line in logical_lines(block.body)]
    else:
        procs = [(block.body, _start(script(block.body), cwd))]
    _finish(procs, block, cwd)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("run", "(exit 3) &\ntrue\n"),  # a background job that ends before the script does
        ("run", "(sleep 1; exit 4) &   # a comment\ntrue\n"),
        ("run", "true\nfalse\ntrue\n"),
        ("run", "(sleep 1; exit 5) &\nwait\ntrue\n"),  # a bare wait still sees the failure
        ("terminals", "true\nfalse\n"),
    ],
)
def test_the_runner_fails_a_block_when_any_command_fails(tmp_path, kind, body):
    with pytest.raises(AssertionError, match="exit"):
        run_block(Block(1, kind, body), tmp_path)
    run_block(Block(1, kind, "true\ntrue &\n"), tmp_path)


SIMULATIONS = [
    b
    for b in blocks()
    if b.kind == "run" and "fedops coordinator" not in b.body and "fedops serve" not in b.body
]
DEPLOYMENTS = [b for b in blocks() if b.kind in ("run", "terminals") and b not in SIMULATIONS]


@pytest.mark.slow
@pytest.mark.parametrize("block", SIMULATIONS, ids=lambda b: b.name)
def test_a_simulation_block_runs_as_written(block, tmp_path):
    run_block(block, _workdir(tmp_path))


@pytest.mark.slow
def test_the_deployment_blocks_run_as_written_one_after_another(tmp_path):
    """In README order, in one directory: a later section must not trip over an earlier
    one's run directory (the consortium once reused the quick start's ``runs/demo``)."""
    assert len(DEPLOYMENTS) >= 3
    cwd = _workdir(tmp_path)
    for block in DEPLOYMENTS:
        run_block(block, cwd)

"""The documentation: navigable pages, links that resolve, command lines the parsers accept, and the
notebook example of docs/python-api.md, run as a script, printing only what it prints."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedsim.cli.main import STAGES

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def test_pages_are_short_and_the_readme_opens_with_the_two_commands():
    long = {p.name: n for p in PAGES[1:] if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"docs pages over 300 lines: {long}"
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:30])
    assert 'pip install torch==2.13.0 -e ".[test]"' in first_screen and "\npytest\n" in first_screen


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#")[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def _fedsim_lines() -> list[tuple[str, str]]:
    lines = []
    for page in PAGES:
        for block in _code_blocks(page.read_text(), "bash"):
            lines += [(page.name, line.strip()) for line in block.splitlines() if line.strip().startswith("fedsim ")]
    return lines


def test_every_documented_fedsim_command_line_parses():
    lines = _fedsim_lines()
    assert len(lines) >= 10  # the command-line page's examples, at least
    for page, line in lines:
        stage, *args = shlex.split(line, comments=True)[1:]  # a shell comment after the command is not an argument
        assert stage in STAGES, f"{page}: unknown stage in {line!r}"
        module = __import__(STAGES[stage][0], fromlist=["parser"])
        try:
            module.parser(f"fedsim {stage}").parse_args(args)
        except SystemExit:
            pytest.fail(f"{page}: {line!r} does not parse")


_RUNNER = textwrap.dedent("""
    import builtins, os, runpy, sys
    asked = open(sys.argv[2], "w")
    example = os.path.abspath(sys.argv[1])
    real_print = builtins.print

    def print(*args, file=None, **kwargs):  # the example's own calls go to a file; any other print stays
        mine = file is None and os.path.abspath(sys._getframe(1).f_code.co_filename) == example
        real_print(*args, file=asked if mine else file, **kwargs)

    builtins.print = print
    runpy.run_path(sys.argv[1], run_name="__main__")
    asked.close()
""")


@pytest.mark.slow
def test_the_notebook_example_runs_and_prints_only_what_it_prints(tmp_path: Path, fedsim_home: Path):
    """Anything on the process's stdout or stderr that did not come from the example's own print()
    calls — a Flower banner, a Ray log line, a progress bar, a warning — fails the test."""
    (example,) = _code_blocks((ROOT / "docs" / "python-api.md").read_text(), "python")[:1]
    (tmp_path / "example.py").write_text(example)
    (tmp_path / "runner.py").write_text(_RUNNER)
    env = {**os.environ, "FEDSIM_HOME": str(fedsim_home), "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "runner.py", "example.py", "asked.txt"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == "" and result.stderr == "", (result.stdout + result.stderr)[-3000:]
    printed = (tmp_path / "asked.txt").read_text()
    assert "memorisation gap" in printed and "rounds seen: 3" in printed  # on_round saw rounds 0, 1, 2
    assert "malicious learner" in printed and "outsider" in printed and "round-0" in printed


def test_the_audit_page_quotes_every_verdict_rule_as_the_code_states_it():
    from attacks.evaluation.verdicts import KINDS, RULES

    page = (ROOT / "docs" / "audit.md").read_text()
    for kind, words in KINDS.items():
        assert f"- **{words}** — {RULES[kind]}" in page, kind

"""Every number the README's results quote lives in a results file it cites.

Each bullet of README.md's ``## Results`` cites (Markdown links) the files under ``benchmarks/results/``
that hold its numbers; each cited file exists and is written by a step of ``benchmarks/numbers.toml``;
``docs/numbers.md`` is that registry's table as ``python benchmarks/regenerate.py --table`` writes it.

What counts as a quoted number (:func:`quoted_numbers`), outside code spans and link targets, with version
strings (2.13.0) removed: every decimal with a '.' (4.19, 0.256; both ends of 55.3–75.5), and an integer only
where a '%' follows it (49–50 %: 49 and 50), except 95 (the intervals' 95 %) and 1 (TPR at 1 % FPR). Other
integers are the setting (10 rounds, 8 subjects, 2 cores, dates), not results.

A number is in a file (:func:`holds`) when the file has it as a number: the same digits, or a number with more
decimals that rounds to it (the README quotes 51.8 for the table's 51.83, 72.6 for seats.csv's 72.649).

Also: :mod:`benchmarks.regenerate`'s resume rule (a second run skips, ``--force`` reruns) and its failure rule
(one line naming the step and its log, no results file left behind), on a registry of ``echo`` commands.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REGENERATE = ROOT / "benchmarks" / "regenerate.py"
RESULTS_LINK = re.compile(r"\]\((benchmarks/results/[^)#\s]+)")

#: Numbers the README quotes that no results file holds yet: measured before their command wrote a results
#: file (``python benchmarks/regenerate.py`` writes benchmarks/results/calibrated.md, reconstruct.md,
#: attribute_study.md and attribute_sweeps.md). A number here may also be in a
#: cited file by coincidence (a different quantity with the same digits): the check cannot tell, so such a
#: number is left out of this list and the comment at its bullet says so.
#: Bullet title → numbers. Each must still be missing: remove it once its results file is in and cited.
PENDING: dict[str, set[str]] = {}


def results_bullets(readme: str) -> dict[str, str]:
    """``## Results``'s bullets: bold title → the bullet's text on one line."""
    section = readme.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    bullets: list[list[str]] = []
    current: list[str] | None = None
    for line in section.splitlines():
        if line.startswith("- "):
            current = [line[2:]]
            bullets.append(current)
        elif current is not None and line.startswith("  ") and line.strip():
            current.append(line.strip())
        else:
            current = None  # a blank line or a paragraph ends the bullet
    found = {}
    for lines in bullets:
        text = " ".join(lines)
        title = re.match(r"\*\*(.+?)\*\*", text)
        assert title, f"a results bullet without a bold title: {text[:80]}"
        found[title.group(1)] = text
    return found


def cited_files(bullet: str) -> list[str]:
    return RESULTS_LINK.findall(bullet)


def quoted_numbers(bullet: str) -> list[str]:
    """The numbers a bullet quotes as results, in order (see the module's docstring for the rule)."""
    text = re.sub(r"`[^`]*`", " ", bullet)            # commands, file names, environment names
    text = re.sub(r"\]\([^)]*\)", "]", text)           # link targets
    text = re.sub(r"\d+(?:\.\d+){2,}", " ", text)      # version strings
    found = []
    for m in re.finditer(r"(?<![\d.])\d+\.\d+(?!\.?\d)|(?<![\d.])(\d+)(?:\s*–\s*(\d+))?\s*%", text):
        if m.group(1) is None:
            found.append(m.group(0))
        else:
            found += [n for n in m.group(1, 2) if n is not None and n not in ("95", "1")]
    return found


def _numbers_in(text: str) -> list[str]:
    return re.findall(r"(?<![\d.])\d+(?:\.\d+)?", text)


def holds(text: str, number: str) -> bool:
    """``text`` has ``number``: the same digits, or a more precise number that rounds to it."""
    places = len(number.split(".")[1]) if "." in number else 0
    step, want = Decimal(1).scaleb(-places), Decimal(number)
    for token in _numbers_in(text):
        if token == number:
            return True
        if "." in token and len(token.split(".")[1]) > places:
            value = Decimal(token)
            if want in (value.quantize(step, ROUND_HALF_UP), value.quantize(step, ROUND_HALF_EVEN)):
                return True
    return False


def _registry() -> list[dict]:
    return tomllib.loads((ROOT / "benchmarks" / "numbers.toml").read_text())["step"]


BULLETS = results_bullets(README.read_text())


def test_the_results_section_has_its_bullets():
    assert len(BULLETS) >= 8, list(BULLETS)
    assert set(PENDING) <= set(BULLETS), f"PENDING names bullets the README no longer has: {set(PENDING) - set(BULLETS)}"


@pytest.mark.parametrize("title", list(BULLETS))
def test_every_number_a_results_bullet_quotes_is_in_a_results_file_it_cites(title: str):
    bullet, pending = BULLETS[title], PENDING.get(title, set())
    files = cited_files(bullet)
    numbers = quoted_numbers(bullet)
    assert numbers, f"{title}: quotes no number"
    missing_files = [f for f in files if not (ROOT / f).is_file()]
    assert not missing_files, f"{title}: cites results files that do not exist: {missing_files}"
    if not files:
        assert set(numbers) <= pending, (f"{title}: cites no benchmarks/results/ file; link the results files "
                                         f"that hold {sorted(set(numbers) - pending)}")
    texts = [(ROOT / f).read_text() for f in files]
    absent = [n for n in numbers if not any(holds(t, n) for t in texts)]
    assert set(absent) <= pending, f"{title}: {sorted(set(absent) - pending)} in none of {files}"
    stale = pending - set(absent)
    assert not stale, f"{title}: {sorted(stale)} are in {files} now: remove them from PENDING"


def test_every_results_file_the_readme_cites_is_written_by_a_registry_step():
    written = {w for step in _registry() for w in step["writes"]}
    cited = {f for bullet in BULLETS.values() for f in cited_files(bullet)}
    assert cited, "the README cites no results file"
    assert not cited - written, f"no step of benchmarks/numbers.toml writes {sorted(cited - written)}"


@pytest.fixture(scope="module")
def regenerate():
    spec = importlib.util.spec_from_file_location("regenerate", REGENERATE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_docs_numbers_is_the_registry_table(regenerate):
    steps = regenerate.load()
    assert {s.name for s in steps} >= {"study", "seats", "paper-schedule"}
    assert (ROOT / "docs" / "numbers.md").read_text() == regenerate.table(steps, ROOT), \
        "docs/numbers.md is out of date: python benchmarks/regenerate.py --table"


def test_what_counts_as_a_quoted_number():
    bullet = ("- **Example** (`python -m attacks.run RUN --rounds 10,20 --values 0.5`; torch 2.13.0+cpu, 2 cores, "
              "2026-12-01, 10 rounds × 4 local epochs, 8 subjects of 1000): unseen MAE **4.19** (train 1.68), "
              "55.3–75.5 % attack accuracy while round 0 sits at 49–50 %, TPR@1% 0.03 (95 % upper bound), "
              "0.256 of members at 1 % FPR, 13.6 min, 3 min 39 s, 10,446 scans at 91×109×91, 1.28–1.61× faster, "
              "ε 4.56 at δ 1e-5, 40 % of them — [page](docs/x.md#v1.2.3); [`results/x.md`](benchmarks/results/x.md)")
    assert quoted_numbers(bullet) == ["4.19", "1.68", "55.3", "75.5", "49", "50", "0.03", "0.256", "13.6",
                                      "1.28", "1.61", "4.56", "40"]
    assert cited_files(bullet) == ["benchmarks/results/x.md"]


def test_a_number_is_in_a_file_as_itself_or_rounded_from_more_decimals():
    text = "| 53.622 | 51.83 | 0.7 | 4.195 | 2026-12-01 | v2.13.0 |"
    assert holds(text, "53.622") and holds(text, "53.6") and holds(text, "51.8") and holds(text, "54")
    assert holds(text, "4.20") and holds(text, "4.2")
    assert not holds(text, "0.70")     # fewer decimals in the file cannot confirm more in the README
    assert not holds(text, "3.6")      # digits inside a number are not that number
    assert not holds(text, "13.0")     # nor are a version's parts
    assert not holds(text, "51.9")


def _fake_repo(tmp_path: Path, command: str) -> Path:
    (tmp_path / "benchmarks").mkdir()
    registry = tmp_path / "benchmarks" / "numbers.toml"
    registry.write_text(f"""
[[step]]
name = "made"
command = "mkdir -p out && echo 'made 4.19' > out/made.md"
writes = ["benchmarks/results/made.md"]
minutes = 1
pages = ["README.md"]

[step.copy]
"out/made.md" = "benchmarks/results/made.md"

[[step]]
name = "appended"
command = "{command}"
writes = ["benchmarks/results/appended.md"]
minutes = 2
pages = ["README.md"]
""")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=tmp_path, check=True)
    return registry


def _regenerate(registry: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REGENERATE), "--registry", str(registry), *args],
                          capture_output=True, text=True, timeout=60)


def test_regenerate_resumes_reruns_with_force_and_stamps_what_it_wrote(tmp_path: Path):
    registry = _fake_repo(tmp_path, "mkdir -p benchmarks/results && echo 'row 0.5' >> benchmarks/results/appended.md")
    first = _regenerate(registry)
    assert first.returncode == 0, first.stderr
    assert "[1/2] made: running" in first.stderr and "[2/2] appended: done in" in first.stderr
    made = (tmp_path / "benchmarks/results/made.md").read_text().splitlines()
    assert made[0].startswith("<!-- regenerated by benchmarks/regenerate.py step made: mkdir -p out && echo")
    assert made[0].endswith(" -->") and " git " in made[0] and made[1:] == ["made 4.19"]
    assert (tmp_path / "benchmarks/results/appended.md").read_text().splitlines().count("row 0.5") == 1
    assert (tmp_path / "runs/regenerate/made.log").is_file() and (tmp_path / "docs/numbers.md").is_file()

    second = _regenerate(registry)
    assert second.returncode == 0 and second.stderr.count("up to date") == 2, second.stderr
    assert (tmp_path / "benchmarks/results/appended.md").read_text().splitlines().count("row 0.5") == 1

    forced = _regenerate(registry, "--force", "--only", "appended")
    assert forced.returncode == 0 and "[1/1] appended: done" in forced.stderr, forced.stderr
    appended = (tmp_path / "benchmarks/results/appended.md").read_text().splitlines()
    assert appended[0].startswith("<!-- regenerated by benchmarks/regenerate.py step appended:")
    assert appended.count("row 0.5") == 2 and sum(line.startswith("<!--") for line in appended) == 1

    listed = _regenerate(registry, "--list")
    assert listed.returncode == 0 and "made" in listed.stdout and "benchmarks/results/appended.md" in listed.stdout


def test_a_failing_step_stops_with_one_line_and_leaves_no_file(tmp_path: Path):
    registry = _fake_repo(tmp_path, "mkdir -p benchmarks/results && echo half >> benchmarks/results/appended.md "
                                    "&& echo oops >&2 && exit 3")
    result = _regenerate(registry)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == "regenerate: step appended failed (exit 3); see runs/regenerate/appended.log", result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "benchmarks/results/appended.md").exists()
    assert "oops" in (tmp_path / "runs/regenerate/appended.log").read_text()
    assert (tmp_path / "benchmarks/results/made.md").is_file()  # the step before it finished and stays


def test_a_step_that_does_not_write_its_file_fails(tmp_path: Path):
    registry = _fake_repo(tmp_path, "true")
    result = _regenerate(registry, "--only", "appended")
    assert result.returncode == 1 and "did not write benchmarks/results/appended.md" in result.stderr, result.stderr

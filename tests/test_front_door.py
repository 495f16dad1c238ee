"""The ``fedsim`` console script, as the README's set-up command installs it: readable help for every
stage, the same parser as each ``python -m`` twin, one-line errors, and a tiny pipeline end to end."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attacks.membership.classifiers import CLASSIFIERS
from attacks.signals.features import FEATURES
from fedsim.cli.main import STAGES
from fedsim.config import available_environments

TWINS = {"cohort": "python -m fedsim.data.cohort", "train": "python -m fedsim.run",
         "centralized": "python -m fedsim.centralized", "attack": "python -m attacks.run",
         "seats": "python -m attacks.seats", "calibrated": "python -m attacks.calibrated",
         "study": "python -m attacks.study", "sweep": "python -m attacks.sweep"}


def _script() -> str:
    found = shutil.which("fedsim", path=str(Path(sys.executable).parent)) or shutil.which("fedsim")
    assert found, "the fedsim console script is not installed: run the README's set-up command (pip install -e ...)"
    return found


def _fedsim(*args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([_script(), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "80", **(env or {})})


def _too_wide(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > 80]


def test_top_level_help_shows_the_pipeline_and_every_stage():
    result = _fedsim("--help")
    assert result.returncode == 0 and not _too_wide(result.stdout), _too_wide(result.stdout)
    pipeline = result.stdout.split("pipeline:\n")[1].split("\n\n")[0].splitlines()
    assert len(pipeline) == 5
    for stage in STAGES:
        assert f"\n  {stage} " in result.stdout
    assert _fedsim().stdout == result.stdout  # no stage: the same usage


def test_the_stages_are_the_python_m_commands():
    assert set(STAGES) == set(TWINS)
    for stage, twin in TWINS.items():
        module = twin.removeprefix("python -m ")
        shim = importlib.import_module(module)
        assert importlib.import_module(STAGES[stage][0]).main is shim.main


@pytest.mark.parametrize("stage", list(TWINS))
def test_stage_help_is_readable_lists_its_choices_and_ends_with_examples(stage: str, monkeypatch):
    result = _fedsim(stage, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"usage: fedsim {stage} ") and not _too_wide(text), _too_wide(text)
    assert "``" not in text and ":mod:" not in text  # no reStructuredText markup
    examples = text.split("\nexamples:\n")[1].strip().splitlines()
    assert 2 <= len(examples) <= 3 and all(e.strip().startswith(f"fedsim {stage}") for e in examples)
    if stage in ("train", "centralized"):
        federated = stage == "train"
        envs = [e for e in available_environments() if ("learners = 0" in _env_text(e)) != federated]
        assert envs and all(e in text for e in envs)
    if stage in ("attack", "seats", "study", "sweep"):
        assert all(name in text for name in CLASSIFIERS)
        assert all(name in text for name in FEATURES)
    # one definition: the python -m twin's help is the same text under its own name
    monkeypatch.setenv("COLUMNS", "80")
    module = importlib.import_module(STAGES[stage][0])
    twin = module.parser(TWINS[stage]).format_help()
    assert twin.replace(TWINS[stage], f"fedsim {stage}").split() == text.split()


def _env_text(name: str) -> str:
    from fedsim.config import env_path

    return env_path(name).read_text()


def test_errors_are_one_line():
    unknown = _fedsim("nonsense")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "train" in unknown.stderr
    bad_env = _fedsim("train", "--env", "no-such-env")
    assert bad_env.returncode == 2 and bad_env.stderr.startswith("error: unknown environment")
    assert "Traceback" not in bad_env.stderr and bad_env.stderr.count("\n") == 1


@pytest.mark.slow
def test_cohort_train_attack_through_the_console_script(tmp_path: Path, fedsim_home: Path):
    env = {"FEDSIM_HOME": str(fedsim_home)}
    cohort = _fedsim("cohort", "--out", str(tmp_path / "cohort"), "--subjects", "96", "--shape", "16", "20", "16",
                     env=env)
    assert cohort.returncode == 0, cohort.stderr
    manifest = tmp_path / "cohort" / "manifest.csv"
    assert len(pd.read_csv(manifest)) == 96
    run = tmp_path / "run"
    train = _fedsim("train", "--env", "tiny", "--cohort", str(manifest), "--out", str(run),
                    "--tensorboard", str(tmp_path / "tb"), env=env, timeout=600)
    assert train.returncode == 0, train.stderr
    assert "round   2/2" in train.stdout and (run / "DONE").is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    attack = _fedsim("attack", str(run), "--features", "error", "--repeats", "2", env=env, timeout=600)
    assert attack.returncode == 0, attack.stderr
    results = pd.read_csv(run / "attacks" / "results.csv")
    assert set(results["control"]) == {"none", "round-0", "age-matched"} and (run / "attacks" / "report.html").is_file()

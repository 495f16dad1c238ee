"""The ``fedsim`` console script, as the README's set-up command installs it: readable help for every
stage, the same parser as each ``python -m`` twin, one-line errors, and a tiny pipeline end to end."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from attacks.membership.classifiers import CLASSIFIERS
from attacks.signals.features import FEATURES
from fedsim.cli.main import STAGES
from fedsim.cli.main import main as fedsim_main
from fedsim.config import available_environments

TWINS = {"cohort": "python -m fedsim.data.cohort", "train": "python -m fedsim.run",
         "centralized": "python -m fedsim.centralized", "attack": "python -m attacks.run",
         "seats": "python -m attacks.seats", "calibrated": "python -m attacks.calibrated",
         "attribute": "python -m attacks.attribute", "reconstruct": "python -m attacks.reconstruct", "study": "python -m attacks.study",
         "sweep": "python -m attacks.sweep"}


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


@pytest.mark.parametrize("stage", list(TWINS))
@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy: the twin's package is imported
def test_stage_help_is_readable_lists_its_choices_and_ends_with_examples(stage: str, capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch):
    text = _help_in_process(lambda: fedsim_main([stage, "--help"]), stage, capsys, monkeypatch)
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
    # one definition: the python -m twin prints the same help under its own name
    module = TWINS[stage].removeprefix("python -m ")
    twin = _help_in_process(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True), module, capsys,
                            monkeypatch)
    assert twin.replace(TWINS[stage], f"fedsim {stage}").split() == text.split()


def _help_in_process(command: Callable[[], object], argv0: str, capsys: pytest.CaptureFixture,
                     monkeypatch: pytest.MonkeyPatch) -> str:
    """What ``command`` (a ``--help``) prints at 80 columns, run in this process: a subprocess per stage spends
    seconds importing (the console script itself: the top-level help, ``fedsim help seats``, the pipeline test)."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys, "argv", [argv0, "--help"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        command()
    assert exited.value.code in (0, None)
    return capsys.readouterr().out


def _env_text(name: str) -> str:
    from fedsim.config import env_path

    return env_path(name).read_text()


def test_help_stage_is_the_stage_help(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch):
    in_process = _help_in_process(lambda: fedsim_main(["seats", "--help"]), "seats", capsys, monkeypatch)
    assert _fedsim("help", "seats").stdout == in_process


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
    run = tmp_path / "run"  # resuming, with TensorBoard: tests/test_federation_ray.py, through the same parser
    train = _fedsim("train", "--env", "tiny", "--cohort", str(manifest), "--out", str(run), "--rounds", "1",
                    env=env, timeout=600)
    assert train.returncode == 0, train.stderr
    assert "round   1/1" in train.stdout and (run / "DONE").is_file()
    attack = _fedsim("attack", str(run), "--features", "error", "--repeats", "2", "--classifier", "logreg", env=env,
                     timeout=600)
    assert attack.returncode == 0, attack.stderr
    results = pd.read_csv(run / "attacks" / "results.csv")
    assert set(results["control"]) == {"none", "round-0", "age-matched"} and (run / "attacks" / "report.html").is_file()

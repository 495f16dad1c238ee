"""The one-command study on a tiny centralized run and a tiny 2-learner federation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attacks import run, study
from attacks.experiments import study as experiment
from attacks.reporting import markdown
from federations import federate


@pytest.mark.slow
def test_study_trains_attacks_summarises_and_skips_finished_steps(tmp_path: Path):
    out = tmp_path / "study"
    args = ["--out", str(out), "--envs", "tiny-centralized,tiny-learners", "--features", "error,pred+label",
            "--classifier", "logreg", "--repeats", "1"]
    # the federation trained in this process (LocalGrid: the same apps, without Ray's half-minute start-up; the
    # front-door and Ray tests train on Ray): the study finds it and trains the centralized run in a child process
    federate(out / "tiny-learners", env="tiny-learners")
    assert study.main(args) == 0
    fed = pd.read_csv(out / "tiny-learners" / "attacks" / "results.csv")
    assert set(fed["threat"]) == {"learner"}
    assert {(a, v) for a, v in zip(fed["attacker"], fed["victim"])} == {(a, v) for a in ("L1", "L2", "L3")
                                                                        for v in ("L1", "L2", "L3") if a != v}
    assert set(fed["control"]) == {"none", "round-0", "age-matched"}
    summary = (out / markdown.SUMMARY_MD).read_text()
    assert "prediction + label" in summary and "tiny-centralized" in summary
    assert "## tiny-learners: attacker × victim" in summary and "## tiny-centralized: attacker" not in summary
    per_env = pd.read_csv(out / markdown.SUMMARY_CSV)
    assert list(per_env["environment"]) == ["tiny-centralized", "tiny-learners"]
    assert per_env[["attack", "age_matched", "round0"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (per_env["unseen_mae"] > 0).all()
    attribute = pd.read_csv(out / markdown.SUMMARY_ATTRIBUTE_CSV)  # the attribute family ran on every environment
    assert set(attribute["environment"]) == {"tiny-centralized", "tiny-learners"} and set(attribute["question"]) == {"sex"}
    assert {"outsider", "feature holder", "malicious learner", "curious controller"} <= set(attribute["seat"])
    assert "## Attribute inference" in summary
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()
              and p.name not in (markdown.SUMMARY_MD, markdown.SUMMARY_CSV, markdown.SUMMARY_ATTRIBUTE_CSV)}
    assert study.main(args) == 0  # everything on disk: nothing retrained, nothing re-attacked
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # attacks.run rewrote the results with other settings: the study's stamp no longer matches, it attacks again
    fed_dir = out / "tiny-learners"
    assert run.main([str(fed_dir), "--features", "error", "--classifier", "logreg", "--repeats", "1", "--no-controls"]) == 0
    assert set(pd.read_csv(fed_dir / "attacks" / "results.csv")["features"]) == {"error"}
    assert study.main(args) == 0
    assert set(pd.read_csv(fed_dir / "attacks" / "results.csv")["features"]) == {"error", "pred+label"}

    # the run was extended (fedsim.run --resume --rounds 3): the study attacks the new last round
    federate(fed_dir, rounds=3)
    assert study.main([*args, "--families", "membership"]) == 0  # (the attribute stamp: tests/attacks/attribute)
    assert pd.read_csv(fed_dir / "attacks" / "results.csv")["round"].max() == 3


def test_the_stamp_covers_settings_snapshots_and_results(tmp_path: Path):
    run_dir = federate(tmp_path / "run", env="tiny-learners", rounds=1)
    settings = experiment.AttackSettings("error", "logreg", 1)
    stamp = experiment.stamp_of(run_dir, settings)
    assert stamp == experiment.stamp_of(run_dir, settings)
    assert stamp != experiment.stamp_of(run_dir, experiment.AttackSettings("error", "logreg", 2))
    (run_dir / "attacks").mkdir()
    (run_dir / "attacks" / "results.csv").write_text("threat\nlearner\n")
    with_results = experiment.stamp_of(run_dir, settings)
    assert with_results != stamp
    federate(run_dir, rounds=2)
    assert experiment.stamp_of(run_dir, settings)["rounds"].keys() == {"0", "1", "2"}


def test_pair_table_shows_attack_and_age_matched_control_per_attacker_and_victim():
    rows = [{"attacker": a, "victim": v, "round": 3, "features": f, "control": c, "repeat": r, "accuracy": acc}
            for a, v, c, acc in [("L1", "L2", "none", 0.6), ("L2", "L1", "none", 0.7),
                                 ("L1", "L2", "age-matched", 0.5), ("L2", "L1", "age-matched", 0.52)]
            for f in ("error", "grad_norm") for r, acc in ((0, acc - 0.02), (1, acc + 0.02))]
    rows.append({"attacker": "L1", "victim": "L2", "round": 0, "features": "error", "control": "round-0",
                 "repeat": 0, "accuracy": 0.99})  # another control, another round: not in the cells
    table = experiment.pair_table(pd.DataFrame(rows), "error", 3)
    assert list(table.columns) == ["A ↓ B →", "L1", "L2"]
    assert table.values.tolist() == [["L1", "—", "60 / 50"], ["L2", "70 / 52", "—"]]


def test_unknown_environment_fails_before_any_work(tmp_path: Path):
    result = subprocess.run([sys.executable, "-m", "attacks.study", "--out", str(tmp_path / "s"), "--envs", "centralised"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "centralised" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "s").exists()

"""The one-command study on a tiny centralized run and a tiny 2-learner federation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attacks import study
from attacks.execution import SerialExecutor, using_executor
from attacks.experiments import environments
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
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # (what else a stamp covers: the test below)


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


def _fake_training(calls: list[list[str]]):
    """``subprocess.call`` of a training command, without training: writes the run's config (its
    ``[federation] snapshot_local``) and ``DONE`` where the command would."""
    def call(argv: list[str]) -> int:
        args = argv[3:]  # python -m MODULE ARGS
        calls.append(args)
        run_dir = Path(args[args.index("--resume") + 1] if "--resume" in args else args[args.index("--out") + 1])
        if "--resume" not in args:
            run_dir.mkdir(parents=True)
            (run_dir / "config.toml").write_text(f"[federation]\nsnapshot_local = {str('--snapshot-local' in args).lower()}\n")
        (run_dir / "DONE").write_text("{}")
        return 0
    return call


def _old_run(run_dir: Path, *, snapshot_local: bool) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(f"[federation]\nsnapshot_local = {str(snapshot_local).lower()}\n")
    (run_dir / "DONE").write_text("{}")
    return run_dir


def test_an_interrupted_centralized_run_is_trained_again_and_a_federation_resumes(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch):
    """A sweep or study stopped mid-training goes on when rerun: a federation with finished rounds resumes, and a
    centralized run (which cannot resume) starts again instead of stopping the whole command."""
    calls: list[list[str]] = []
    said: list[str] = []
    monkeypatch.setattr(experiment.subprocess, "call", _fake_training(calls))
    for env in ("centralized", "skewed-iid"):
        run_dir = tmp_path / env
        (run_dir / "rounds" / "0001").mkdir(parents=True)
        (run_dir / "config.toml").write_text("[federation]\nsnapshot_local = false\n")
        (run_dir / "metrics.jsonl").write_text('{"round": 1}\n')
        for name in ("model.safetensors", "meta.json"):
            (run_dir / "rounds" / "0001" / name).write_text("")
        assert experiment.snapshots.complete_rounds(run_dir) == [1] and not experiment.snapshots.is_done(run_dir)
        experiment.train_env(env, run_dir, None, said.append)
        assert experiment.snapshots.is_done(run_dir)
    centralized, federation = calls
    assert "--out" in centralized and not (tmp_path / "centralized" / "rounds" / "0001").exists()
    assert "interrupted" in said[0]
    assert federation[federation.index("--resume") + 1] == str(tmp_path / "skewed-iid")


def test_the_study_keeps_its_federations_local_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``fedsim seats`` and ``fedsim reconstruct`` on a study's federation read its local models: the study trains
    with --snapshot-local, and a finished run on disk made without them is trained again, not reused."""
    calls: list[list[str]] = []
    said: list[str] = []
    monkeypatch.setattr(experiment.subprocess, "call", _fake_training(calls))

    experiment.train_env("skewed-iid", tmp_path / "skewed-iid", None, said.append, local_models=True)
    experiment.train_env("centralized", tmp_path / "centralized", None, said.append, local_models=True)
    assert "--snapshot-local" in calls[0] and "--snapshot-local" not in calls[1]  # a centralized run has no learners
    assert experiment.kept_local_models(tmp_path / "skewed-iid")
    assert experiment.kept_local_models(federate(tmp_path / "real", env="tiny-learners", rounds=1))  # a real run's config

    calls.clear()
    experiment.train_env("skewed-iid", tmp_path / "skewed-iid", None, said.append, local_models=True)
    assert calls == []  # finished, with its local models: reused
    old = _old_run(tmp_path / "old", snapshot_local=False)
    experiment.train_env("skewed-iid", old, None, said.append, local_models=False)
    assert calls == []  # the sweep's runs keep what their environment says
    experiment.train_env("skewed-iid", old, None, said.append, local_models=True)
    assert len(calls) == 1 and "--snapshot-local" in calls[0] and experiment.kept_local_models(old)
    assert (tmp_path / "old.no-local-models" / "DONE").is_file() and "kept no local models" in said[-2]

    class Trained(Exception):
        pass

    def train_env(env, run_dir, cohort, say, **kwargs):  # the command asks for local models
        assert kwargs.get("local_models") is True
        raise Trained
    monkeypatch.setattr(experiment, "train_env", train_env)
    with pytest.raises(Trained):
        study.main(["--out", str(tmp_path / "study"), "--envs", "skewed-iid"])


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


def test_off_the_serial_executor_the_driver_trains_the_federations_and_the_rest_are_tasks(tmp_path: Path,
                                                                                        monkeypatch: pytest.MonkeyPatch):
    """A federation's learners are Ray actors of its own: a task holding a CPU could wait for them forever, so on
    Ray the driver trains every federation first; training a centralized run and every attack are the tasks."""
    inside: list[bool] = []
    trained: list[tuple[str, bool]] = []

    class Tasks:  # any executor but the serial one
        def map(self, fn, tasks, *, done=None):
            inside.append(True)
            try:
                return [fn(t) for t in reversed(tasks)][::-1]
            finally:
                inside.pop()

    monkeypatch.setattr(experiment, "train_env", lambda env, run_dir, *a, **kw: trained.append((env, bool(inside))))
    monkeypatch.setattr(experiment, "attack_cached", lambda run_dir, *a, **kw: pd.DataFrame({"run": [run_dir.name]}))
    task = environments.EnvironmentTask(experiment.AttackSettings("error", "logreg", 1))
    jobs = [("centralized", tmp_path / "c", ""), ("skewed-iid", tmp_path / "f", "")]
    with using_executor(Tasks()):
        found = environments.run_environments(task, jobs)
    assert trained == [("skewed-iid", False), ("skewed-iid", True), ("centralized", True)]  # (the task finds it done)
    assert [a.membership["run"][0] for a in found] == ["c", "f"] and found[0].attribute is None
    with using_executor(SerialExecutor()):  # serially, every job trains in its own turn
        environments.run_environments(task, jobs)
    assert trained[3:] == [("centralized", False), ("skewed-iid", False)]

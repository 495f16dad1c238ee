"""``python -m attacks.reconstruct`` on a tiny federation that kept its local models: every attack and the
sweep write their rows, later commands keep earlier results, one page shows them; bad input is one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attacks.reconstruct import main
from attacks.reconstruction.run import Scans
from attacks.target import open_run
from attacks.reporting.reconstruction import out_dir
from federations import federate
from fedsim import snapshots
from fedsim.cli import run_cli


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """tiny-learners (snapshot_local = true), 2 rounds, in-process."""
    return federate(tmp_path_factory.mktemp("reconstruct") / "run", env="tiny-learners")


def test_every_attack_and_the_sweep_write_their_rows_and_one_page(local_run):
    fast = ["--steps", "5"]
    assert main([str(local_run), "--attack", "gradient", "--learner", "L2", "--subjects", "3", *fast]) == 0
    assert main([str(local_run), "--attack", "features", "--layers", "conv1,conv6", "--subjects", "2", *fast]) == 0
    assert main([str(local_run), "--attack", "model", *fast]) == 0
    out = out_dir(local_run)
    results = pd.read_csv(out / "results.csv")
    assert set(results["attack"]) == {"gradient", "features", "model"}  # each command kept the others' rows
    gradient = results[results["attack"] == "gradient"]
    assert len(gradient) == 3 and set(gradient["learner"]) == {"L2"} and set(gradient["round"]) == {2}
    features = results[results["attack"] == "features"]
    assert sorted(set(features["setting"])) == ["conv1 learned", "conv1 white-box", "conv6 learned", "conv6 white-box"]
    images = results[results["attack"] != "model"]
    assert images["ssim"].between(-1, 1).all() and images["identified"].isin([0, 1]).all()
    assert (images["ssim_gain"] - (images["ssim"] - images["ssim_prior"])).abs().max() < 1e-9
    model = results[results["attack"] == "model"]
    assert set(model["round"]) == {0, 2} and model["closeness_auc"].between(0, 1).all()
    # another update rule is another setting, kept beside the first; the same setting again replaces its rows
    for update in ("normalized", "adam"):  # adam: the default again
        assert main([str(local_run), "--attack", "gradient", "--learner", "L2", "--subjects", "3", "--update", update,
                     *fast]) == 0
    again = pd.read_csv(out / "results.csv")
    assert again.loc[again["attack"] == "gradient", "update"].value_counts().to_dict() == {"adam": 3, "normalized": 3}
    assert len(again) == len(results) + 3
    results = again

    assert main([str(local_run), "--sweep", "--subjects", "2", "--batch-sizes", "1,2", "--local-steps", "1,epoch",
                 "--widths", "1,0.5", "--defenses", "clip,secagg:2", *fast]) == 0
    sweep = pd.read_csv(out / "sweep.csv")
    points = sweep.groupby(["width", "batch_size", "local_steps", "defense"]).size()
    assert len(points) == 2 * 2 * 2 + 2  # widths x batch sizes x local steps, + each defense at the first point
    assert set(sweep.loc[sweep["defense"] != "none", "width"]) == {1.0}
    assert set(sweep.loc[sweep["defense"] != "none", "batch_size"]) == {1}
    assert set(sweep.loc[(sweep["local_steps"] == "epoch") & (sweep["batch_size"] == 1), "steps"]) == {2}
    assert (points == 2).all()  # every point scores both subjects: one batch of 1 is two updates
    assert sweep.loc[(sweep["batch_size"] == 1) & (sweep["local_steps"] == "1"), "group"].nunique() == 2
    assert len(pd.read_csv(out / "results.csv")) == len(results)  # the sweep leaves results.csv alone

    page = (out / "report.html").read_text()
    for title in ("Gradient and feature inversion", "Model inversion", "Gradient-inversion sweep",
                  "Reconstructions beside their subjects"):
        assert title in page
    kept = np.load(out / "examples.npz")
    assert page.count("data:image/png") == len(kept.files) + 1  # one grid per kept example + the sweep plot
    assert all(kept[k].shape == (3, 16, 20, 16) for k in kept.files)
    assert (out / "sweep.png").stat().st_size > 0
    assert len(list((out / "examples").glob("*.png"))) == len(kept.files)


def test_the_sweeps_updates_are_tasks_the_same_anywhere_and_a_rerun_inverts_none_again(local_run, tmp_path):
    from attacks.execution import TASKS_DIR, using_executor
    from attacks.reconstruction.settings import GradientAttack, Inversion
    from attacks.reconstruction.sweep import _context, sweep
    from attacks.signals.updates import Defense
    from executors import AsFreshWorkers

    settings = dict(subjects=2, batch_sizes=(1, 2), local_steps=("1",), defenses=(Defense("clip", 1e-3),),
                    attack=GradientAttack(Inversion(iterations=5, update="adam", tv=1e-4)))
    runs = {name: shutil.copytree(local_run, tmp_path / name, ignore=shutil.ignore_patterns("attacks"))
            for name in ("serial", "workers")}
    serial = sweep(open_run(runs["serial"]), **settings)
    workers = AsFreshWorkers(_context.cache_clear)
    with using_executor(workers):
        found = sweep(open_run(runs["workers"]), **settings)
    assert sorted(workers.ran) == [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1)]  # batch 1: two updates; batch 2: one
    timeless = lambda o: pd.DataFrame(o.rows).drop(columns="seconds")  # noqa: E731
    pd.testing.assert_frame_equal(timeless(serial), timeless(found), check_exact=True)
    assert [e.label for e in serial.examples] == [e.label for e in found.examples]
    np.testing.assert_array_equal(serial.examples[0].image, found.examples[0].image)

    stored = sorted((runs["workers"] / TASKS_DIR / "reconstruction-sweep").glob("*.json"))
    assert len(stored) == 5
    stored[0].unlink()  # as if the sweep had stopped before that task
    again = AsFreshWorkers(_context.cache_clear)
    with using_executor(again):
        resumed = sweep(open_run(runs["workers"]), **settings)
    assert len(again.ran) == 1  # only the missing update is inverted again
    pd.testing.assert_frame_equal(timeless(found), timeless(resumed), check_exact=True)
    with using_executor(again):  # another grid: batch 2 is now the first point, whose first update keeps the example
        smaller = sweep(open_run(runs["workers"]), **{**settings, "batch_sizes": (2,), "defenses": ()})
    assert len(again.ran) == 1 + 1 and [e.label for e in smaller.examples] == ["gradient, batch 2, 1 local step(s), none"]
    batch_2 = timeless(found)[timeless(found)["batch_size"] == 2].reset_index(drop=True)
    pd.testing.assert_frame_equal(timeless(smaller), batch_2)  # its rows: the stored task's
    with using_executor(again):  # another attack is another task: nothing stored is reused for it
        sweep(open_run(runs["workers"]), **{**settings, "attack": GradientAttack(Inversion(iterations=4))})
    assert len(again.ran) == 2 + 5


def test_feature_and_model_inversions_are_tasks_the_same_anywhere_and_a_rerun_inverts_none_again(local_run, tmp_path):
    """Each layer × method and each round × age is a task: run as fresh workers (pickled, in reverse order) they
    give the serial rows and examples bit for bit; a rerun reads them back, and only a lost one runs again."""
    from attacks.execution import TASKS_DIR, using_executor
    from attacks.reconstruction.settings import Inversion
    from attacks.reconstruction.tasks import _feature_context, _model_context, feature_attack, model_attack
    from executors import AsFreshWorkers

    settings = Inversion(iterations=5)
    runs = {name: shutil.copytree(local_run, tmp_path / name, ignore=shutil.ignore_patterns("attacks"))
            for name in ("serial", "workers")}

    def both(run: Path) -> tuple:
        return (feature_attack(open_run(run), subjects=2, layers=["conv1", "conv6"], settings=settings, epochs=2),
                model_attack(open_run(run), ages=[60.0, 70.0], settings=settings))

    def forget() -> None:
        _feature_context.cache_clear()
        _model_context.cache_clear()

    serial = both(runs["serial"])
    workers = AsFreshWorkers(forget)
    with using_executor(workers):
        found = both(runs["workers"])
    assert sorted(map(str, workers.ran)) == sorted(map(str, [("conv1", "white-box"), ("conv1", "learned"),
                                                             ("conv6", "white-box"), ("conv6", "learned"),
                                                             (2, 60.0), (2, 70.0), (0, 60.0), (0, 70.0)]))
    timeless = lambda o: pd.DataFrame(o.rows).drop(columns="seconds")  # noqa: E731
    for a, b in zip(serial, found):
        pd.testing.assert_frame_equal(timeless(a), timeless(b), check_exact=True)
        assert [e.label for e in a.examples] == [e.label for e in b.examples]
        for x, y in zip(a.examples, b.examples):
            np.testing.assert_array_equal(x.image, y.image)
            np.testing.assert_array_equal(x.truth, y.truth)
    assert len(serial[0].rows) == 2 * 2 * 2 and len(serial[0].examples) == 4  # layers x methods x subjects
    assert [e.label for e in serial[1].examples] == ["model inversion, round 2, age 70 (truth: mean member of that age)"]

    lost = sorted((runs["workers"] / TASKS_DIR / "feature-inversion").glob("*.json"))
    assert len(lost) == 4 and len(list((runs["workers"] / TASKS_DIR / "model-inversion").glob("*.json"))) == 4
    lost[0].unlink()  # as if the attack had stopped before that task
    again = AsFreshWorkers(forget)
    with using_executor(again):
        resumed = both(runs["workers"])
    assert len(again.ran) == 1  # only the missing inversion runs again
    for a, b in zip(found, resumed):
        pd.testing.assert_frame_equal(timeless(a), timeless(b), check_exact=True)
    with using_executor(again):  # other settings are other tasks
        feature_attack(open_run(runs["workers"]), subjects=2, layers=["conv1"], methods=("white-box",),
                       settings=Inversion(iterations=4))
    assert len(again.ran) == 2


def test_the_whole_update_is_replayed_exactly_and_every_row_carries_the_attacks_strength(local_run):
    """A learner's real update (Adam, shuffled batches of 4, fedsim's seed scheme): replayed on the true scans in
    the learner's own order it is matched exactly, so the objective at the truth is 0 while the prior's is not."""
    n = len(Scans(open_run(local_run)).ids("L3"))
    assert main([str(local_run), "--attack", "gradient", "--learner", "L3", "--subjects", str(n), "--steps", "3",
                 "--update", "lbfgs", "--restarts", "2", "--weighting", "layer", "--prior", "pca",
                 "--components", "4", "--constraints"]) == 0
    results = pd.read_csv(out_dir(local_run) / "results.csv")
    rows = results[(results["learner"] == "L3")]
    assert len(rows) == n and set(rows["setting"]) == {"unrolled"} and set(rows["restarts"]) == {2}
    assert rows["objective_truth"].max() < 1e-3 < rows["objective_prior"].min()
    assert rows["objective_other"].min() > 1e-3
    for col in ("objective_reached", "return_closed", "return_passed", "control_ssim_gain", "control_recovered",
                "residual_corr", "residual_corr_others", "residual_rank"):
        assert rows[col].notna().all(), col
    assert set(rows["inversion"]) == {"lbfgs, 3 steps x 2 restarts, layer cosine, output constraints where exact, "
                                      "PCA-4 prior, box projection, TV 0.0001"}
    page = (out_dir(local_run) / "report.html").read_text()
    assert "How strong each gradient inversion was" in page and "attack too weak to tell" in page


def test_scans_come_back_in_the_order_asked_and_score_their_own_subjects(local_run):
    target = open_run(local_run)
    scans = Scans(target)
    learner = scans.ids("L1")
    ids = learner[::-1][:5] + learner[:1]  # unsorted, and a subject twice
    expected = np.stack([np.asarray(target.cohort.volumes[target.cohort.index_of([s])[0]]) for s in ids])
    np.testing.assert_array_equal(scans.volumes(ids)[:, 0].numpy(), expected)
    rows = scans.score(scans.volumes(ids[:3]), ids[:3], learner)  # the true scans, as if reconstructed exactly
    assert all(r["identified"] == 1 and r["ssim"] == pytest.approx(1) for r in rows)
    assert rows[0]["chance"] == pytest.approx(3 / (len(learner) + len(scans.outsiders)))  # a batch of 3 scans


def test_bad_input_through_python_m_is_one_line_without_a_traceback(local_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(local_run, bare, ignore=shutil.ignore_patterns("attacks", "L*.safetensors"))
    result = subprocess.run([sys.executable, "-m", "attacks.reconstruct", str(bare)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert "train with --snapshot-local" in result.stderr


def test_bad_input_is_one_line(local_run, tiny_run, capsys):
    def error(args: list[str]) -> str:
        assert run_cli(main, args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1, err
        return err

    assert "learner 'L9' does not exist" in error([str(local_run), "--learner", "L9"])
    assert "round 7 does not exist" in error([str(local_run), "--round", "7"])
    assert "batch size 16 is larger than the learner's 4 subjects" in error(
        [str(local_run), "--sweep", "--subjects", "4", "--batch-sizes", "16"])
    assert "this is a centralized run" in error([str(tiny_run)])
    assert "unknown defense 'noise'" in error([str(local_run), "--sweep", "--defenses", "noise"])
    assert "--methods: none given" in error([str(local_run), "--attack", "features", "--methods", ","])
    assert "use --subjects" in error([str(local_run), "--objective", "unrolled", "--subjects", "2"])
    assert "not a multiple of batch size 3" in error([str(local_run), "--sweep", "--subjects", "4",
                                                      "--batch-sizes", "1,3"])
    assert "secagg 9 averages 8 other learners" in error([str(local_run), "--sweep", "--subjects", "2",
                                                         "--batch-sizes", "1", "--defenses", "secagg:9"])
    assert "TV weight must be 0 or more" in error([str(local_run), "--tv", "-1"])
    assert "needs at least 501 of the attacker's own scans" in error([str(local_run), "--prior", "pca",
                                                                      "--components", "500", "--steps", "1"])
    assert snapshots.complete_rounds(local_run) == [0, 1, 2]

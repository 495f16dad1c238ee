"""Attribute inference: the questions, the splits, the probe, every seat against its baseline, property inference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from attacks.attribute.inference import (
    CONTROLLER, HOLDER, IMAGE, LABEL_ONLY, LEARNER, NO_MODEL, OUTSIDER, Probe, attribute_attacks, seats_of,
)
from attacks.attribute.labels import questions, values
from attacks.attribute.properties import property_attack, property_summary
from attacks.cli.attribute import main
from attacks.reporting.attribute import attribute_table
from attacks.target import open_run
from attacks.threats.splits import attribute_splits
from attribute_runs import planted_federation, point_at, variant
from federations import federate
from fedsim.cli import centralized, run_cli
from fedsim.errors import FedsimError


def _manifest(**columns) -> SimpleNamespace:
    return SimpleNamespace(manifest=pd.DataFrame({"subject_id": ["a", "b", "c"], "age": [50.0, 60.0, 70.0], **columns}))


def test_attributes_come_from_the_manifest_and_bad_columns_are_one_line_errors():
    assert list(values(_manifest(sex=["female", "M", "f"]), "sex")) == ["F", "M", "F"]
    with pytest.raises(FedsimError, match="no 'sex' column"):
        values(_manifest(), "sex")
    with pytest.raises(FedsimError, match="empty for 1 subject"):
        values(_manifest(sex=["F", "", "M"]), "sex")
    with pytest.raises(FedsimError, match="expected F/M"):
        values(_manifest(sex=["F", "X", "M"]), "sex")
    with pytest.raises(FedsimError, match="every subject of the cohort has site 'synthetic'"):
        values(_manifest(site=["synthetic"] * 3), "site")
    with pytest.raises(FedsimError, match="unknown attribute 'age'"):
        values(_manifest(), "age")
    sites = questions(_manifest(site=["s1", "s2", "s3"]), "site")
    assert [q.name for q in sites] == ["site=s1", "site=s2", "site=s3"]  # one against the rest, each
    (two,) = questions(_manifest(site=["s1", "s2", "s1"]), "site")
    assert two.name == "site=s2" and list(two.labels) == [0, 1, 0]
    (sex,) = questions(_manifest(sex=["F", "M", "F"]), "sex")
    assert sex.name == "sex" and list(sex.labels) == [1, 0, 1]  # women are the positive class


def test_a_learner_fits_on_its_own_subjects_and_attacks_the_others_and_the_unseen():
    groups = ["L1"] * 6 + ["L2"] * 5 + ["L3"] * 4 + ["unseen"] * 7
    partitions = pd.DataFrame({"subject_id": [f"s{i}" for i in range(len(groups))], "group": groups})
    labels = pd.Series(np.arange(len(groups)) % 2, index=partitions["subject_id"])
    triples = attribute_splits(partitions, labels)
    assert [(a, v) for a, v, _ in triples][:3] == [("L1", "L2"), ("L1", "L3"), ("L1", "unseen")]
    owner = partitions.set_index("subject_id")["group"]
    for attacker, victim, split in triples:
        (train, _), (test, y_test) = split.train(), split.test()
        assert set(owner[train]) == {attacker} and set(owner[test]) == {victim}
        np.testing.assert_array_equal(y_test, labels[test])
    partitions = pd.DataFrame({"subject_id": [f"s{i}" for i in range(20)], "group": ["train"] * 12 + ["unseen"] * 8})
    labels = pd.Series(np.arange(20) % 2, index=partitions["subject_id"])
    triples = attribute_splits(partitions, labels, repeats=2)
    assert [(a, v) for a, v, _ in triples] == [("adversary", "members"), ("adversary", "unseen")] * 2
    (_, _, members), (_, _, unseen) = triples[:2]
    assert not set(members.train()[0]) & (set(members.test()[0]) | set(unseen.test()[0]))
    assert set(members.test()[0]) <= set(partitions["subject_id"][:12]) and set(unseen.test()[0]) <= set(partitions["subject_id"][12:])


def test_the_probe_keeps_what_the_attacker_knows_from_drowning_in_a_wide_feature_set():
    """A predictive known column beside 2000 noise columns: the probe scores like the known column alone, a plain
    logistic regression on everything (the obvious way) loses it."""
    rng = np.random.default_rng(0)
    n = 240
    y = rng.integers(0, 2, n)
    known = (y + rng.normal(0, 1.0, n))[:, None]
    X = np.concatenate([rng.normal(size=(n, 2000)), known], axis=1)
    train, test = np.arange(n) < 120, np.arange(n) >= 120
    probe = Probe("wide", known=1).fit(X[train], y[train], repeat=0)
    scores, _ = Probe("wide", known=1).score(probe, X[test])
    alone = roc_auc_score(y[test], known[test, 0])
    plain = LogisticRegression(max_iter=2000).fit(X[train], y[train]).decision_function(X[test])
    assert roc_auc_score(y[test], scores) > alone - 0.03
    assert roc_auc_score(y[test], plain) < alone - 0.1


@pytest.fixture(scope="module")
def coded_run(tmp_path_factory, sexed_manifest) -> Path:
    """A centralized model trained to predict sex (its 'ages' are 70 for women, 55 for men), then given the true
    ages: the model's output is the attribute, the attacker's knowledge (true age, site) is not."""
    table = pd.read_csv(sexed_manifest)
    coded = variant(sexed_manifest, "coded", age=np.where(table["sex"] == "F", 70.0, 55.0))
    out = tmp_path_factory.mktemp("coded") / "run"
    centralized.main(["--env", "tiny-centralized", "--cohort", str(coded), "--out", str(out), "--epochs", "6"])
    return point_at(out, sexed_manifest)


def test_a_model_trained_to_predict_the_attribute_gives_it_away_far_above_the_label_baseline(coded_run):
    target = open_run(coded_run)
    (sex,) = questions(target, "sex")
    results = attribute_attacks(target, sex, rnd=target.rounds[-1], seats=[OUTSIDER], repeats=2)
    table = attribute_table(results).set_index(["seat", "features"])
    attack, baseline = table.loc[(OUTSIDER, "pred+label")], table.loc[(NO_MODEL, LABEL_ONLY)]
    assert attack["auc"] > 0.9 and baseline["auc"] < 0.7
    assert attack["auc"] > baseline["auc"] + 0.25 and attack["kind"] == "detected"
    assert attack["round0_auc"] < 0.75  # the untrained model's predictions do not carry it
    assert set(results["victims"]) == {"members", "non-members"}


@pytest.fixture(scope="module")
def shuffled_run(tmp_path_factory, sexed_manifest) -> Path:
    """A 3-learner federation (local models kept) whose manifest's sex is then drawn at random: an attribute
    independent of every scan."""
    run = federate(tmp_path_factory.mktemp("shuffled") / "run", sexed_manifest, env="tiny-learners")
    table = pd.read_csv(sexed_manifest)
    shuffled = variant(sexed_manifest, "shuffled", sex=np.random.default_rng(1).permutation(table["sex"].to_numpy()))
    return point_at(run, shuffled)


def test_every_seat_sits_at_the_baseline_for_an_attribute_independent_of_the_scans(shuffled_run):
    target = open_run(shuffled_run)
    assert seats_of(target, 2) == [OUTSIDER, HOLDER, LEARNER, CONTROLLER]
    (sex,) = questions(target, "sex")
    results = attribute_attacks(target, sex, rnd=2)
    table = attribute_table(results)
    models = table[table["seat"] != NO_MODEL]
    # the controller reads each learner's local model, the outsider the community model: other numbers, same victims
    pairs = results[(results["features"] == "pred+label") & (results["control"] == "none")].groupby("seat")
    scores = {seat: rows.sort_values(["attacker", "victim"])["auc"].to_numpy() for seat, rows in pairs}
    assert not np.allclose(scores[CONTROLLER], scores[OUTSIDER])
    assert set(models["seat"]) == {OUTSIDER, HOLDER, LEARNER, CONTROLLER}
    assert (models["kind"] == "not-detected").all(), models[["seat", "features", "auc", "baseline_auc", "kind"]]
    assert abs(models["auc"].mean() - 0.5) < 0.08 and abs(table.set_index("features").loc[IMAGE, "auc"] - 0.5) < 0.15


def test_property_inference_recovers_a_planted_share_of_women(tmp_path, sexed_manifest):
    """Four learners holding 8 %, 38 %, 62 % and 92 % women, in a federation whose label carries sex (the ages of
    ``coded_run``): the controller's shadow regression ranks them and beats the federation's average by far."""
    table = pd.read_csv(sexed_manifest)
    coded = variant(sexed_manifest, "coded-federation", age=np.where(table["sex"] == "F", 70.0, 55.0)
                    + np.random.default_rng(0).uniform(-3, 3, len(table)))
    run = planted_federation(tmp_path / "run", coded, [0.1, 0.4, 0.6, 0.9], rounds=2)
    rows = property_attack(open_run(run), rnd=2, shadows=32)
    women = rows[rows["property"] == "women"].set_index("learner")
    np.testing.assert_allclose(women["true"], [1 / 13, 5 / 13, 8 / 13, 12 / 13])
    assert women["estimate"].is_monotonic_increasing
    summary = property_summary(rows).set_index("property")
    assert summary.loc["women", "mae"] < 0.15 and summary.loc["women", "mae"] < summary.loc["women", "baseline_mae"] / 2
    assert summary.loc["age", "mae"] < summary.loc["age", "baseline_mae"]


def test_the_command_writes_results_and_page_and_keeps_other_attributes(shuffled_run, capsys):
    run = shutil.copytree(shuffled_run, shuffled_run.parent / "copy")
    assert main([str(run), "--seats", "outsider", "--no-controls", "--no-property"]) == 0
    out = run / "attacks" / "attribute"
    assert {"results.csv", "results.json", "report.html"} <= {p.name for p in out.iterdir()}
    assert main([str(run), "--attribute", "site", "--seats", "outsider,holder", "--features", "error,activation:conv1",
                 "--no-property"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert set(results["attribute"]) == {"sex", "site=site-2"}  # the site run kept the sex rows
    assert set(results.loc[results["attribute"] == "site=site-2", "features"]) == {LABEL_ONLY, IMAGE, "error", "activation:conv1"}
    summary = json.loads((out / "results.json").read_text())
    assert {r["attribute"] for r in summary["attacks"]} == {"sex", "site=site-2"}
    page = (out / "report.html").read_text()
    assert "site=site-2" in page and "<th>label only</th>" in page and "<img" in page  # the AUC-by-layer figure
    assert "report:" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--seats", "spy"], "--seats: unknown seat 'spy'"),
    (["--attribute", "height"], "unknown attribute 'height'"),
    (["--seats", "adversary"], "seat 'centralized adversary' cannot attack"),
    (["--seats", "holder", "--features", "error"], "no feature set of --features can be read by the feature holder"),
    (["--round", "0"], "round 0 is the untrained model: attack a trained round (1..2)"),
])
def test_bad_input_is_one_line(shuffled_run, capsys, args, message):
    assert run_cli(main, [str(shuffled_run), *args, "--no-property"]) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_one_site_cohort_has_no_site_to_infer(tiny_run, capsys):
    assert run_cli(main, [str(tiny_run), "--attribute", "site"]) != 0
    assert "every subject of the cohort has site 'synthetic'" in capsys.readouterr().err


def test_too_few_subjects_of_a_class_is_one_line(shuffled_run, sexed_manifest, capsys):
    run = shutil.copytree(shuffled_run, shuffled_run.parent / "one-woman", ignore=shutil.ignore_patterns("attacks"))
    table = pd.read_csv(sexed_manifest)
    point_at(run, variant(sexed_manifest, "one-woman", sex=["F"] + ["M"] * (len(table) - 1)))
    assert run_cli(main, [str(run), "--seats", "outsider", "--no-property"]) != 0
    err = capsys.readouterr().err
    assert "too few subjects of each class to attack sex" in err and len(err.strip().splitlines()) == 1, err


def test_no_attribute_and_too_few_shadows_are_one_line(shuffled_run, capsys):
    for args, message in ((["--attribute", ","], "--attribute names no attribute"),
                          (["--shadows", "2"], "--shadows must be at least 4")):
        assert run_cli(main, [str(shuffled_run), *args]) != 0
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_the_studys_attribute_results_are_reused_until_the_labels_change(shuffled_run, sexed_manifest):
    from attacks.experiments.study import attribute_cached

    run = shutil.copytree(shuffled_run, shuffled_run.parent / "stamped", ignore=shutil.ignore_patterns("attacks"))
    said: list[str] = []
    first = attribute_cached(run, controls=False, say=said.append)
    assert set(first["attribute"]) == {"sex", "site=site-2"}  # the cohort has two sites: both attributes
    again = attribute_cached(run, controls=False, say=said.append)
    assert "attribute results found" in said[-1]
    pd.testing.assert_frame_equal(first, again)
    point_at(run, sexed_manifest)  # the true sexes: same models, other labels
    attribute_cached(run, controls=False, say=said.append)
    assert "attribute results found" not in said[-1]


def test_a_centralized_runs_interval_is_no_narrower_than_one_attacks_own():
    """Three draws of one model's attack: the bootstrap over them is far narrower than any one test set's
    sampling error, so the table takes the attacks' own (analytic) interval; a federation's many victims keep theirs."""
    def rows(victims: list[str]) -> pd.DataFrame:
        return pd.DataFrame([{"attribute": "sex", "round": 1, "classifier": "probe", "seat": seat, "features": features,
                              "control": "none", "victims": "members", "attacker": "A", "victim": v, "repeat": r,
                              "auc": auc + 0.001 * r, "auc_low": auc - 0.08, "auc_high": auc + 0.08, "accuracy": 0.6,
                              "tpr@0.01": 0.02, "n_members": 60, "n_nonmembers": 60}
                             for seat, features, auc in ((NO_MODEL, LABEL_ONLY, 0.5), (OUTSIDER, "error", 0.60))
                             for r in range(3) for v in victims])
    one = attribute_table(rows(["members"])).set_index("seat").loc[OUTSIDER]
    assert one["auc_low"] <= 0.60 - 0.079 and one["auc_high"] >= 0.60 + 0.079
    assert one["kind"] == "not-detected"  # 0.10 above the baseline, not by 1.96 standard errors of the difference
    many = attribute_table(rows([f"L{k}" for k in range(8)])).set_index("seat").loc[OUTSIDER]
    assert many["auc_high"] - many["auc_low"] < 0.05 and many["kind"] == "detected"  # above; no round-0 rows to beat
    assert many["verdict"] == "leak detected, large — round-0 control not run"

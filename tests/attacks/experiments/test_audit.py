"""``fedsim audit``: every family from every seat of a tiny --snapshot-local federation, one index over their pages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import attacks

from attacks.cli.audit import main
from attacks.evaluation.summary import controls_table
from attacks.experiments.audit import BUDGETS, _learner_calibrated, parse_families, run_audit
from attacks.reporting.attribute import attribute_table
from attacks.reporting.audit import write_audit
from fedsim.cli import run_cli
from fedsim.errors import FedsimError
from federations import federate


#: The quick budget, cheaper still: what the tests need of every family, at a fraction of its fits.
TINY = dataclasses.replace(BUDGETS["quick"], name="tiny", classifier="logreg", scans=2)


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    """tiny-learners (local models kept), 2 rounds, audited by the library at a tiny budget, then written."""
    run = federate(tmp_path_factory.mktemp("audit") / "run", env="tiny-learners")
    write_audit(run_audit(run, budget=TINY), command="test")
    return run


def test_the_index_links_every_familys_page_and_each_links_back(audited):
    index = (audited / "audit" / "index.html").read_text()
    pages = {"membership": audited / "audit" / "membership.html",
             "attribute": audited / "attacks" / "attribute" / "report.html",
             "reconstruction": audited / "attacks" / "reconstruct" / "report.html"}
    for name, page in pages.items():
        href = page.relative_to(audited).as_posix()
        assert (f'href="{Path("..", href).as_posix()}"' in index) or (f'href="{page.name}"' in index), name
        back = Path("..", "..", "audit", "index.html").as_posix() if page.parent != audited / "audit" else "index.html"
        assert f'href="{back}"' in page.read_text(), name
    assert "What the verdicts mean" in index and "Not run, and why" in index


def test_summary_rows_match_each_familys_own_results(audited):
    document = json.loads((audited / "audit" / "summary.json").read_text())
    summary = pd.DataFrame(document["summary"])
    assert {"membership", "attribute", "reconstruction"} <= set(summary["family"])
    assert {"malicious learner", "curious controller", "outsider"} <= set(summary.loc[summary["family"] == "membership", "seat"])
    # membership: every attack's AUC in summary.json is the page's table (controls_table of the family's rows)
    attacks = pd.DataFrame(document["attacks"])
    learner = attacks[(attacks["family"] == "membership") & (attacks["seat"] == "malicious learner")].set_index("attack")
    assert len(learner) == 3  # quick: error, pred + label, gradient magnitude
    # attribute: the same numbers as the attribute page's table, rebuilt from its results.csv
    own = attribute_table(pd.read_csv(audited / "attacks" / "attribute" / "results.csv",
                                      dtype={"attacker": str, "victim": str, "features": str},
                                      keep_default_na=False, na_values=[""]))
    for r in attacks[attacks["family"] == "attribute"].itertuples():
        mine = own[(own["attribute"] == r.question) & (own["seat"] == r.seat) & (own["features"] == r.attack)]
        assert len(mine) == 1 and mine["auc"].iloc[0] == pytest.approx(r.value) and mine["verdict"].iloc[0] == r.verdict
    # each seat's row is one of its attacks: the verdict and number of that attack
    for r in summary.itertuples():
        rows = attacks[(attacks["family"] == r.family) & (attacks["question"] == r.question) & (attacks["seat"] == r.seat)]
        assert ((rows["attack"] == r.attack) & (rows["verdict"] == r.verdict)).any()
    # the quick budgets skip gradient inversion and say why
    assert any(s["family"] == "reconstruction" and "gradient inversion" in s["why"] for s in document["skipped"])


def test_membership_numbers_are_the_controls_table_of_every_attacks_row(audited):
    document = json.loads((audited / "audit" / "summary.json").read_text())
    rows = pd.read_csv(audited / "audit" / "membership.csv", dtype={"attacker": str, "victim": str})
    table = controls_table(rows, document["round"], by=["seat"])
    attacks = pd.DataFrame(document["attacks"])
    trained = attacks[attacks["attack_kind"] == "trained classifier"]
    assert len(trained) == len(table) == 3 + 2 + 3  # learner and controller: 3 sets; the outsider: the 2 black-box ones
    for r, t in zip(trained.itertuples(), table.itertuples()):  # the number is the age-matched attack's: the verdict's
        assert (r.seat, r.value, r.verdict) == (t.seat, pytest.approx(t.matched_auc), t.verdict)


def test_a_run_without_local_models_lists_the_controller_as_skipped(tmp_path):
    run = federate(tmp_path / "run", env="tiny", rounds=1)
    result = run_audit(run, families="reconstruction", budget=TINY)
    assert any(s.seat == "curious controller" and "--snapshot-local" in s.why for s in result.skipped)
    assert any(s.family == "reconstruction" and "gradient inversion needs the learner's update" in s.why
               for s in result.skipped)


def test_the_skipped_calibrated_attacks_say_what_still_runs(audited):
    """The quick budget trains no references: the learner's calibrated attacks are skipped, and the skip says the
    controller's still run only where the run kept the local models they reuse."""
    skipped = json.loads((audited / "audit" / "summary.json").read_text())["skipped"]
    learner = [s["why"] for s in skipped if s["seat"] == "malicious learner" and "calibrated" in s["why"]]
    assert learner and "the controller's calibrated attacks" in learner[0] and "still run" in learner[0]
    without = SimpleNamespace(budget=TINY, skipped=[])
    _learner_calibrated(None, without, seed=0, cache=None, progress=None, say=print, local=False)
    assert len(without.skipped) == 1 and "controller" not in without.skipped[0].why


def test_an_earlier_round_is_audited_when_asked(audited):
    """--round R: the attacks and their age-matched control read round R's models, not the last round's."""
    result = run_audit(audited, families="membership", budget=TINY, rnd=1)
    assert result.round == 1
    attacked = result.membership[result.membership["control"] != "round-0"]
    assert set(attacked["round"]) == {1} and set(result.calibrated["round"]) == {1}
    with pytest.raises(FedsimError, match="round 7 does not exist"):
        run_audit(audited, families="membership", budget=TINY, rnd=7)
    with pytest.raises(FedsimError, match="round 0 is the untrained model"):
        run_audit(audited, families="membership", budget=TINY, rnd=0)
    with pytest.raises(FedsimError, match="one round number"):
        attacks.audit(audited, families="membership", rounds="1,2")


def test_bad_families_and_budgets_are_one_line_errors(tmp_path):
    with pytest.raises(FedsimError, match="unknown attack family 'membershp'"):
        parse_families("membershp,attribute")
    with pytest.raises(FedsimError, match="unknown --budget"):
        run_audit(tmp_path, budget="huge")
    with pytest.raises(FedsimError, match="--canaries audits ε beside the membership attacks"):
        run_audit(tmp_path, families="attribute", canaries=True)


def test_the_command_prints_the_verdicts_and_the_skips(audited, capsys, monkeypatch):
    """Last in this file: it rewrites the audit's pages with one family."""
    monkeypatch.setenv("COLUMNS", "250")  # one line per row and message
    assert run_cli(main, [str(audited), "--families", "reconstruction"]) == 0
    out = capsys.readouterr().out
    assert "holder of conv1" in out and ("leak detected" in out or "not detected" in out)
    assert "not run:" in out and "gradient inversion at --budget quick" in out and "audit/index.html" in out
    assert run_cli(main, [str(audited), "--families", "membrship"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown attack family 'membrship'")

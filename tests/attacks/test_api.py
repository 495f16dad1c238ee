"""attacks.audit, the notebook entry point: a DataFrame, nothing printed, the commands' defaults and numbers."""

from __future__ import annotations

import pandas as pd
import pytest

import attacks
from attacks import run
from attacks.membership.selection import ZOO
from fedsim.errors import FedsimError


def test_audit_returns_the_commands_numbers_prints_nothing_and_reports_progress(tiny_run, capsys):
    capsys.readouterr()
    steps = []
    results = attacks.audit(tiny_run, features="error,loss", repeats=2,
                            progress=lambda what, done, total: steps.append((what, done, total)))
    assert capsys.readouterr() == ("", "")  # nothing below the command line prints
    assert isinstance(results, pd.DataFrame) and set(results["seat"]) == {"centralized adversary"}
    assert set(results["control"]) == {"none", "round-0", "age-matched"}
    assert set(results["classifier"]) == {"auto"}  # the commands' default classifier, with what it chose
    assert set(results["chosen"]) <= set(ZOO)
    # progress: per-sample features of each snapshot, then the attacks, each reported to completion
    assert any(w.startswith("features of") for w, _, _ in steps) and any(w == "fitting attacks" for w, _, _ in steps)
    assert all(done <= total for _, done, total in steps) and steps[-1][1] == steps[-1][2]
    # the command with the same arguments (its defaults) gives the same numbers
    assert run.main([str(tiny_run), "--features", "error,loss", "--repeats", "2"]) == 0
    cli = pd.read_csv(tiny_run / "attacks" / "results.csv")
    keys = ["control", "round", "features", "repeat"]
    merged = results.merge(cli, on=keys, suffixes=("", "_cli"))
    assert len(merged) == len(results) == len(cli)
    assert (merged["accuracy"] == merged["accuracy_cli"]).all() and (merged["auc"] == merged["auc_cli"]).all()


def test_audit_refuses_a_seat_the_run_does_not_have(tiny_run):
    with pytest.raises(FedsimError, match="a centralized run has one seat"):
        attacks.audit(tiny_run, seats=["learner"])
    with pytest.raises(FedsimError, match="unknown seat 'server'"):
        attacks.audit(tiny_run, seats=["server"])

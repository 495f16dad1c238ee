"""The calibrated attacks' page: verdicts from the shared rule, every attack named, the legend, the index rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attacks.evaluation import verdicts
from attacks.evaluation.metrics import attack_metrics, flat_metrics
from attacks.evaluation.summary import verdict
from attacks.membership.calibration import attack_name
from attacks.reporting.calibrated import PAGE, attack_label, calibrated_table, summary_rows, write_report

#: (method, statistic, how far members' scores sit above non-members' on the trained model, in sds)
ATTACKS = [("loss", "abs-error", 0.1), ("lira-online", "log-abs", 1.5), ("rmia", "likelihood:gaussian", 0.0)]


def _calibrated(tmp_path: Path, n: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``calibrated.csv`` and ``calibrated_scores.csv`` as the command writes them, from synthetic scores:
    one clear leak, one faint and one null attack, each with a round-0 control at chance."""
    rng = np.random.default_rng(0)
    member = np.repeat([1, 0], n // 2)
    rows, scores = [], []
    for control, rnd in (("none", 23), ("round-0", 0)):
        for method, statistic, shift in ATTACKS:
            score = rng.normal(size=n) + (shift if control == "none" else 0.0) * member
            settings = {"method": method, "statistic": statistic}
            settings.update({"variance": "global"} if method.startswith("lira") else {"gamma": 1.0} if method == "rmia" else {})
            rows.append({"control": control, "round": rnd, **settings, "references": 4, "reference_epochs": 23,
                         "n_population": 2 * n, "n_z": n // 2,
                         **flat_metrics(attack_metrics(member, score, threshold=shift / 2))})
            scores.append(pd.DataFrame({"control": control, "round": rnd, "attack": attack_name(method, statistic),
                                        "subject_id": [f"s{i}" for i in range(n)], "set": "attack-test",
                                        "member": member, "score": score}))
    out = tmp_path / "attacks"
    out.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(out / "calibrated.csv", index=False)  # read back: the page works from the files
    return pd.read_csv(out / "calibrated.csv"), pd.concat(scores, ignore_index=True)


def _expected(results: pd.DataFrame, method: str) -> verdicts.Verdict:
    """The verdict of ``method`` by hand: its row and its round-0 control's as summary rows, each with its own
    AUC interval and the standard error that interval implies."""
    def summary(row: pd.Series) -> dict[str, float]:
        se = max(row["auc"] - row["auc_low"], row["auc_high"] - row["auc"]) / verdicts.Z
        return {"accuracy": row["accuracy"], "accuracy_se": math.nan, "accuracy_low": math.nan, "auc": row["auc"],
                "auc_low": row["auc_low"], "auc_high": row["auc_high"], "auc_se": se,
                "tpr_at_1pct": row["tpr@0.01"], "tpr_at_1pct_high": row["tpr@0.01_high"]}
    mine = results[results["method"] == method].set_index("control")
    attack, round0 = summary(mine.loc["none"]), summary(mine.loc["round-0"])
    statistic = mine.loc["none", "statistic"]
    return verdict(pd.Series(attack), pd.Series(round0), None, name=attack_label(method, statistic))


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    (tmp_path / "config.toml").write_text('name = "centralized"\n[model]\nname = "cnn3d"\n')
    return tmp_path


def test_page_names_every_attack_with_the_shared_verdict_and_the_legend(run_dir):
    results, scores = _calibrated(run_dir)
    classifiers = pd.DataFrame([{"classifier": "logreg", "features": "error", "round": 23, "accuracy": 0.61,
                                 "accuracy_low": 0.58, "accuracy_high": 0.64, "auc": 0.66, "auc_low": 0.6,
                                 "auc_high": 0.7, "tpr": 0.05, "tpr_at_1pct_low": 0.0, "tpr_at_1pct_high": 0.1}])
    page = write_report(run_dir, results, scores=scores, classifiers=classifiers)
    assert page == run_dir / PAGE and page.is_file()
    html = page.read_text()
    expected = {method: _expected(results, method) for method, _, _ in ATTACKS}
    assert expected["lira-online"].kind == verdicts.DETECTED  # the synthetic leak is found…
    assert expected["rmia"].kind == verdicts.NOT_DETECTED  # …and the null attack states its bound
    for method, statistic, _ in ATTACKS:
        assert attack_label(method, statistic) in html
        assert f'<span class="v {expected[method].kind}">{expected[method].words}</span>' in html
    assert "What the verdicts mean" in html and all(words in html for words in verdicts.KINDS.values())
    assert html.count("data:image/png;base64,") == 2  # the trained model's ROC curves and the control's
    assert "round-0 control" in html and "logreg" in html and "4 reference models of 23 epochs" in html
    # the verdict comes right after the attack's name
    table = calibrated_table(results)
    assert list(table["verdict"]) == [expected[m].words for m, _, _ in ATTACKS]
    header = html[html.index("<th>attack</th>"):]
    assert header.index("<th>verdict</th>") < header.index("<th>AUC [95% CI]</th>")


def test_without_scores_or_controls_the_page_says_so(run_dir):
    results, _ = _calibrated(run_dir)
    html = write_report(run_dir, results[results["control"] == "none"]).read_text()
    assert "data:image/png" not in html and "none (--no-controls)" in html
    assert html.count(verdicts.KINDS[verdicts.NO_CONTROLS]) == len(ATTACKS) + 1  # each attack, and the legend


def test_summary_rows_match_the_page(run_dir):
    results, _ = _calibrated(run_dir)
    table, rows = calibrated_table(results), summary_rows(results)
    assert [r["attack"] for r in rows] == [
        "loss threshold (−|ŷ − y|, uncalibrated)", "LiRA online (log |ŷ − y|), 4 references",
        "RMIA (Gaussian likelihood), 4 references"]
    for row, (_, expected) in zip(rows, table.iterrows()):
        assert row["family"] == "membership" and row["seat"] == "centralized adversary" and row["link"] == PAGE
        assert (row["kind"], row["verdict"], row["bound"]) == (expected["kind"], expected["verdict"], expected["bound"])
        for key in ("auc", "auc_low", "auc_high", "tpr_at_1pct", "tpr_at_1pct_low", "tpr_at_1pct_high", "accuracy"):
            assert row[key] == pytest.approx(expected[key], nan_ok=True)
    lira = results[(results["method"] == "lira-online") & (results["control"] == "none")].iloc[0]
    assert rows[1]["auc_low"] == pytest.approx(lira["auc_low"])  # the row's own interval, not a bootstrap's NaN


"""The one aggregation: means, sample std, bootstrap intervals over victims, counts; verdicts from it."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from attacks.evaluation.intervals import cluster_bootstrap
from attacks.evaluation.summary import summarise


def test_summarise_is_mean_sample_std_and_the_bootstrap_over_victims():
    rows = [{"features": "error", "victim": v, "repeat": r, "accuracy": acc, "auc": acc, "tpr@0.01": 0.1,
             "n_members": 40 + r, "n_nonmembers": 40}
            for v, base in (("L1", 0.6), ("L2", 0.8)) for r, acc in enumerate((base - 0.02, base + 0.02))]
    rows.append({"features": "grad_norm", "victim": "L1", "repeat": 0, "accuracy": 0.7, "auc": 0.7, "tpr@0.01": 0.2,
                 "n_members": 40, "n_nonmembers": 40})
    table = summarise(pd.DataFrame(rows), ["features"]).set_index("features")
    error = table.loc["error"]
    values = np.array([0.58, 0.62, 0.78, 0.82])
    assert error["accuracy"] == pytest.approx(0.7) and error["accuracy_std"] == pytest.approx(values.std(ddof=1))
    expected = cluster_bootstrap(values, ["L1", "L1", "L2", "L2"])
    assert (error["accuracy_low"], error["accuracy_high"]) == pytest.approx((expected.low, expected.high))
    assert error["attacks"] == 4 and error["n_members"] == 40.5 and error["tpr_at_1pct"] == pytest.approx(0.1)
    one = table.loc["grad_norm"]  # a single attack: a mean without an interval
    assert one["accuracy"] == 0.7 and math.isnan(one["accuracy_low"]) and math.isnan(one["accuracy_std"])


def test_one_victim_keeps_at_least_its_attacks_own_auc_interval_and_many_keep_the_bootstrap():
    one = pd.DataFrame([{"victim": "model", "features": "loss", "accuracy": 0.6, "auc": 0.62 + 0.001 * r,
                         "auc_low": 0.55, "auc_high": 0.69} for r in range(3)])
    row = summarise(one, ["features"]).iloc[0]
    assert row["auc_low"] <= 0.55 and row["auc_high"] >= 0.69 and row["auc_se"] > 0.03
    single = summarise(one.iloc[:1], ["features"]).iloc[0]  # one attack: no bootstrap at all, its own interval
    assert (single["auc_low"], single["auc_high"]) == (0.55, 0.69)
    many = pd.DataFrame([{"victim": str(v), "features": "loss", "accuracy": 0.6, "auc": 0.6 + 0.01 * v,
                          "auc_low": 0.3, "auc_high": 0.9} for v in range(8)])
    row = summarise(many, ["features"]).iloc[0]
    assert row["auc_low"] > 0.6 and row["auc_high"] < 0.68  # eight victims: the bootstrap over them, not 0.3–0.9

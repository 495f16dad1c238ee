"""The one verdict vocabulary: its rule on synthetic summaries, and the same words through every family."""

import numpy as np
import pandas as pd

from attacks.evaluation import verdicts
from attacks.evaluation.summary import controls_table, summarise


def _row(accuracy, low, high, *, auc=None, auc_low=None, auc_high=None, tpr=0.02, se=None):
    auc = accuracy if auc is None else auc
    return pd.Series({"accuracy": accuracy, "accuracy_low": low, "accuracy_high": high,
                      "accuracy_se": (high - low) / 3.92 if se is None else se, "auc": auc,
                      "auc_low": low if auc_low is None else auc_low, "auc_high": high if auc_high is None else auc_high,
                      "auc_se": (high - low) / 3.92, "tpr_at_1pct": tpr, "tpr_at_1pct_high": tpr + 0.02})


ROUND0 = _row(0.500, 0.488, 0.512)


def test_a_small_leak_whose_interval_excludes_chance_is_detected_small():
    # skewed-iid's malicious learner: 53.6 % [51.8, 55.4] — "no clear signal" under the old 5-point rule
    leak = _row(0.536, 0.518, 0.554)
    v = verdicts.membership(leak, ROUND0, leak, name="error")
    assert (v.kind, v.size) == (verdicts.DETECTED, "small")
    assert v.words == "leak detected, small"
    assert v.controls == ("chance", "round-0 model", "age-matched non-members")


def test_a_large_leak_by_auc_or_tpr():
    assert verdicts.membership(_row(0.66, 0.62, 0.70), ROUND0, None).size == "large"
    assert verdicts.membership(_row(0.56, 0.53, 0.59, tpr=0.15), ROUND0, None).size == "large"


def test_a_null_states_the_largest_leak_its_interval_allows():
    null = _row(0.503, 0.486, 0.520, auc=0.51, auc_low=0.49, auc_high=0.547)
    v = verdicts.membership(null, ROUND0, null, name="loss")
    assert v.kind == verdicts.NOT_DETECTED
    assert v.words == "not detected: at most AUC 0.55, TPR@1% 0.04 (95 % upper bound)"
    assert "attack: loss" in v.text


def test_beating_chance_but_not_the_untrained_model_is_not_a_detected_leak():
    above = _row(0.56, 0.53, 0.59)
    round0 = _row(0.55, 0.52, 0.58)
    assert verdicts.membership(above, round0, above).kind != verdicts.DETECTED


def test_a_failed_strength_check_turns_a_null_into_too_weak_but_never_hides_a_leak():
    null = _row(0.50, 0.48, 0.52)
    assert verdicts.membership(null, ROUND0, null, weak="positive control missed").words == (
        "attack too weak to tell — positive control missed")
    leak = _row(0.60, 0.57, 0.63)
    assert verdicts.membership(leak, ROUND0, leak, weak="positive control missed").kind == verdicts.DETECTED


def test_shift_without_membership_and_missing_controls():
    null = _row(0.50, 0.48, 0.52)
    assert verdicts.membership(_row(0.58, 0.55, 0.61), ROUND0, null, shift=True).kind == verdicts.SHIFT
    assert verdicts.membership(null, None, None).kind == verdicts.NO_CONTROLS
    v = verdicts.membership(_row(0.58, 0.55, 0.61), None, _row(0.57, 0.54, 0.60))
    assert v.kind == verdicts.DETECTED and v.note == "round-0 control not run"


def test_attribute_and_reconstruction_speak_the_same_words():
    baseline = _row(0.49, 0.46, 0.52)
    # 0.58 against a label-only 0.49: "≤ baseline" under the old rule, a leak now
    v = verdicts.attribute(_row(0.58, 0.55, 0.61), baseline, _row(0.50, 0.47, 0.53))
    assert v.words == "leak detected, small" and "label-only baseline" in v.controls
    assert verdicts.attribute(_row(0.85, 0.82, 0.88), baseline, _row(0.86, 0.83, 0.89)).kind == verdicts.SCAN
    assert verdicts.attribute(_row(0.50, 0.47, 0.53), baseline, None).kind == verdicts.NOT_DETECTED
    scan = {"ssim_gain_low": -0.1, "identified": 0.0, "identified_low": 0.0, "identified_high": 0.37,
            "identified_corr": 0.0, "identified_corr_low": 0.0, "identified_corr_high": 0.37, "chance": 0.003,
            "control_recovered": 1.0, "return_passed": 0.0}
    assert verdicts.reconstruction(scan).kind == verdicts.TOO_WEAK
    assert verdicts.reconstruction({**scan, "return_passed": 1.0}).bound == "at most 0.37 of scans identified (95 % upper bound)"
    assert verdicts.reconstruction({**scan, "identified_corr": 0.5, "identified_corr_low": 0.16}).words.startswith(
        "leak detected, large")


def test_one_seat_keeps_its_detected_leak_or_the_loosest_bound():
    leak = {"kind": verdicts.DETECTED, "auc": 0.55, "auc_high": 0.6}
    null_a, null_b = ({"kind": verdicts.NOT_DETECTED, "auc": 0.6, "auc_high": 0.62},
                      {"kind": verdicts.NOT_DETECTED, "auc": 0.5, "auc_high": 0.66})
    assert verdicts.strongest([null_a, leak], score="auc", upper="auc_high") is leak
    assert verdicts.strongest([null_a, null_b], score="auc", upper="auc_high") is null_b
    assert verdicts.strongest([], score="auc", upper="auc_high") is None


def _simulated(seed: int, leak: float, features: tuple[str, ...] = ("error",)) -> pd.DataFrame:
    """8 victims x 3 repeats of each attack (``features``; the first's mean 0.5 + leak, the others' 0.5), its
    age-matched control (the same) and round 0 (0.5); the attacks are independent of each other."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, name in enumerate(features):
        for victim in range(8):
            shift = rng.normal(0, 0.01)  # victims differ: the bootstrap must resample them, not the attacks
            for repeat in range(3):
                for control, rnd, mean in (("none", 10, 0.5 + leak * (i == 0)), ("age-matched", 10, 0.5 + leak * (i == 0)),
                                           ("round-0", 0, 0.5)):
                    rows.append({"victim": str(victim), "repeat": repeat, "control": control, "round": rnd,
                                 "features": name, "seat": "malicious learner",
                                 "accuracy": mean + shift + rng.normal(0, 0.02), "auc": mean + shift + rng.normal(0, 0.02),
                                 "tpr@0.01": 0.01})
    return pd.DataFrame(rows)


def test_the_rule_by_simulation_rarely_calls_a_null_a_leak_and_finds_a_small_leak():
    seeds = range(40)
    null = [controls_table(_simulated(s, 0.0), 10).iloc[0]["kind"] == verdicts.DETECTED for s in seeds]
    small = [controls_table(_simulated(s, 0.036), 10).iloc[0]["kind"] == verdicts.DETECTED for s in seeds]
    assert np.mean(null) <= 0.10  # the AUC at 2.5 % one-sided, and round 0 to beat as well
    assert np.mean(small) >= 0.90
    table = controls_table(_simulated(0, 0.036), 10).iloc[0]
    assert table["verdict"] == "leak detected, small" and summarise(_simulated(0, 0.0), ["features"]).shape[0] == 1


def test_a_seat_of_many_attacks_is_not_called_a_leak_by_its_luckiest_one():
    # three null attacks from one seat, judged together (Bonferroni over the seat's attacks): the seat, not each
    # attack, keeps the false-alarm rate; a small leak in one of them is still found
    many = ("error", "loss", "grad_norm")
    seeds = range(40)

    def seat(table: pd.DataFrame) -> bool:
        return bool((table["kind"] == verdicts.DETECTED).any())
    together = [seat(controls_table(_simulated(s, 0.0, many), 10, by=["seat"])) for s in seeds]
    assert np.mean(together) <= 0.10
    found = [seat(controls_table(_simulated(s, 0.04, many), 10, by=["seat"])) for s in seeds]
    assert np.mean(found) >= 0.85  # a small leak in one of the three is still found
    table = controls_table(_simulated(0, 0.0, many), 10, by=["seat"])
    assert set(table["tests"]) == {3}


def test_a_negative_says_when_only_the_correction_kept_it_from_a_leak():
    near = _row(0.52, 0.505, 0.535)
    assert verdicts.membership(near, ROUND0, near).kind == verdicts.DETECTED
    v = verdicts.membership(near, ROUND0, near, tests=8)
    assert v.kind == verdicts.NOT_DETECTED
    assert v.note == "its own 95 % interval excludes chance, but not for the 8 attacks this seat ran together"
    assert verdicts.z_for(1) == verdicts.Z and 2.39 < verdicts.z_for(3) < 2.40

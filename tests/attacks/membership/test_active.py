"""The active malicious learner on a memorising tiny federation: its targets become separable after
one round, the others stay as separable as without it, and the controller sees the attacker's norm."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attacks.membership.active import DROP, LOSS, WITH_ASCENT, WITHOUT_ASCENT, active_attack, defense_view
from fedsim import snapshots
from fedsim.data.partition_table import read_partitions
from fedsim.errors import FedsimError
from fedsim.federation.malicious import SIMULATED, read_attack_record
from tests.helpers.federations import federate
from tests.helpers.memorising import ACTIVE_ENV, noise_cohort


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same federation and seed twice: with L1 ascending on 20 targets in round 2, and without."""
    root = tmp_path_factory.mktemp("active")
    manifest = noise_cohort(root / "cohort")
    (root / "active.toml").write_text(ACTIVE_ENV)
    (root / "passive.toml").write_text(ACTIVE_ENV.replace("active = true", "active = false"))
    return (federate(root / "active", manifest, env=root / "active.toml"),
            federate(root / "passive", manifest, env=root / "passive.toml"))


def _row(rows: list[dict], statistic: str, subjects: str, run: str) -> dict:
    return next(r for r in rows if (r["statistic"], r["subjects"], r["run"]) == (statistic, subjects, run))


def test_targets_become_separable_after_one_round_and_the_others_do_not_change(runs):
    active, passive = runs
    rows = active_attack(active, passive_run=passive)
    attack = _row(rows, DROP, "targets", WITH_ASCENT)
    assert (attack["round"], attack["n_members"], attack["n_nonmembers"]) == (2, 10, 10)
    assert attack["auc"] >= 0.9 and attack["tpr@0.01"] >= 0.5  # at FPR 0: 10 non-members (the row's note)
    assert "smallest non-zero FPR is 1/10" in attack["tpr@0.01_note"]
    # the seat's passive attack and the same drop without the ascent, on the same targets: weaker
    assert _row(rows, LOSS, "targets", WITH_ASCENT)["auc"] <= attack["auc"] - 0.15
    plain = _row(rows, DROP, "targets", WITHOUT_ASCENT)
    assert plain["auc"] < attack["auc"] and plain["tpr@0.01"] <= attack["tpr@0.01"] - 0.3
    # subjects nobody ascended: their owners' training leaks through the drop exactly as without the attack
    with_, without = (_row(rows, DROP, "untargeted", run) for run in (WITH_ASCENT, WITHOUT_ASCENT))
    assert with_["n_members"] == 200 - 10 and abs(with_["auc"] - without["auc"]) <= 0.05
    assert with_["tpr@0.01"] <= attack["tpr@0.01"] - 0.3


def test_the_run_records_a_simulated_attack_and_its_targets(runs):
    active, passive = runs
    record = read_attack_record(active)
    assert record["simulated"] is True and record["learner"] == "L1" and len(record["targets"]) == 20
    held = read_partitions(active / snapshots.PARTITIONS_FILE).set_index("subject_id").loc[record["targets"], "group"]
    assert (held == "unseen").sum() == 10 and "L1" not in set(held)  # never the attacker's own subjects
    meta = json.loads((snapshots.round_dir(active, 2) / snapshots.META_FILE).read_text())
    assert meta["learners"]["L1"]["attack"] == SIMULATED and "attack" not in meta["learners"]["L2"]
    assert "attack" not in json.loads((snapshots.round_dir(active, 1) / snapshots.META_FILE).read_text())["learners"]["L1"]
    with pytest.raises(FedsimError, match="not trained with \\[attack\\] active = true"):
        active_attack(passive)


def test_the_attackers_update_norm_is_recorded_and_bounded(runs):
    active, passive = runs
    lines = {m["round"]: m for m in snapshots.read_metrics(active)}
    assert all(f"L{k}_update_norm" in lines[r] for r in (1, 2, 3) for k in (1, 2, 3))
    assert set(k for k in lines[2] if k.endswith("_ascent_norm")) == {"L1_ascent_norm"} and "L1_ascent_norm" not in lines[3]
    learner = json.loads((snapshots.round_dir(active, 2) / snapshots.META_FILE).read_text())["learners"]["L1"]
    normal, ascent = learner["normal_norm"], learner["ascent_norm"]
    assert ascent == pytest.approx(5.0 * normal, rel=1e-4)  # ascent_scale times the normal update
    assert ascent - normal - 1e-6 <= learner["update_norm"] <= ascent + normal + 1e-6
    view = {r["round"]: r for r in defense_view(active, passive_run=passive)}
    assert view[2]["norm_ratio"] > 3 and view[1]["norm_ratio"] < 1.5 and view[3]["norm_ratio"] < 1.5
    assert "clipping_norm" not in view[2]  # no central DP in this run
    # the community model still trains: the unseen MAE stays within a year of the run without the attack
    assert all(abs(r["unseen_mae"] - r["passive_unseen_mae"]) < 1.0 for r in view.values())


def test_central_dp_clipping_sees_the_attacker_before_it_clips(runs, tmp_path):
    active, _ = runs
    env = tmp_path / "clipped.toml"
    env.write_text(ACTIVE_ENV + "[defense]\ncentral_dp = \"server\"\ncentral_noise_multiplier = 0.01\n"
                   "central_clipping_norm = 2.0\n")
    manifest = snapshots.read_config(active)["cohort"]["manifest"]
    view = {r["round"]: r for r in defense_view(federate(tmp_path / "run", Path(manifest), env=env))}
    assert view[2]["clipping_norm"] == 2.0 and view[2]["clipped"] and view[2]["attacker_norm"] > 3  # as sent
    assert not view[1]["clipped"] and not view[3]["clipped"] and view[2]["others_max_norm"] < 2.0


def test_the_audit_judges_the_active_attack_among_the_learners_and_shows_its_norms(runs):
    from attacks.evaluation import verdicts
    from attacks.experiments.audit import run_audit
    from attacks.membership.active import active_name
    from attacks.reporting.audit import MEMBERSHIP_PAGE, write_audit
    from attacks.threats.seats import SEAT_NAMES

    active, _ = runs
    report = write_audit(run_audit(active, families="membership", rnd=3), command="fedsim audit")
    rows = report.attacks[report.attacks["attack"] == active_name(2)]
    assert list(rows["seat"]) == [SEAT_NAMES["learner"]]
    assert rows["kind"].iloc[0] == verdicts.DETECTED and rows["value"].iloc[0] >= 0.9  # its AUC, as active_attack's
    assert rows["attack_kind"].iloc[0] == "simulated active attack"
    learner = report.summary.set_index("seat").loc[SEAT_NAMES["learner"]]
    assert learner["attack"] == active_name(2) and learner["attacks"] == len(report.attacks.query("seat == @learner.name"))
    page = (active / MEMBERSHIP_PAGE).read_text()
    assert "What a controller sees of the active learner" in page and active_name(2) in page
    # before the round that shows the drop, the attacker cannot run it: a skip, not a verdict
    early = run_audit(active, families="membership", rnd=2)
    assert active_name(2) not in set(early.membership["features"])
    assert any("audit --round 3 or later" in s.why for s in early.skipped)

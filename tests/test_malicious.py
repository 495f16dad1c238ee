"""The simulated active learner's pieces: its [attack] table, the target draw and the bounded ascent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fedsim.config import AttackConfig, available_environments, from_resolved, load_env
from fedsim.data.cache import CohortArray, VolumeDataset
from fedsim.defenses.central_dp import update_norm
from fedsim.errors import FedsimError
from fedsim.federation.malicious import ascend, attacking, draw_targets
from fedsim.training import regression_loss
from tests.helpers.memorising import SHAPE, Memoriser

ATTACK = "\n[attack]\nactive = true\nlearner = 1\ntargets = 4\n"


def test_off_by_default_and_absent_from_every_other_resolved_config():
    for name in available_environments():
        cfg = load_env(name)
        if name != "tiny-active":  # no table: nothing in config.toml, so nothing keyed on it changes
            assert cfg.attack is None and "attack" not in cfg.to_dict()
    active = load_env("tiny-active")
    assert active.attack.active and from_resolved(active.to_dict()).attack == active.attack
    assert not attacking(load_env("tiny"), "L1", 1)


@pytest.mark.parametrize("edit, match", [
    (lambda s: s + ATTACK.replace("targets = 4", "targets = 3"), r"\[attack\] targets must be an even integer of at least 2"),
    (lambda s: s + ATTACK.replace("learner = 1", "learner = 4"), r"\[attack\] learner = 4 but there are 3 learners \(L1..L3\)"),
    (lambda s: s + ATTACK.replace("active = true", 'active = "yes"'), r"\[attack\] active must be true or false, got 'yes'"),
    (lambda s: s + ATTACK + "ascent_scale = 0\n", r"\[attack\] ascent_scale must be a positive number"),
    (lambda s: s + ATTACK + "round = 2\n", r"unknown key 'round' in \[attack\]; allowed keys: active, learner, targets"),
    (lambda s: s + ATTACK + "\n[defense]\ndp_noise_multiplier = 1.0\ndp_max_grad_norm = 1.0\n",
     r"\[attack\] active is not simulated beside DP-SGD learners"),
])
def test_bad_attack_tables_fail_in_one_line(tmp_path, edit, match):
    path = tmp_path / "bad.toml"
    path.write_text(edit(load_env("tiny").path.read_text()))
    with pytest.raises(FedsimError, match=match) as err:
        load_env(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))


def test_a_switched_off_table_is_legal_even_where_an_attack_could_not_run(tmp_path):
    path = tmp_path / "off.toml"
    path.write_text(load_env("tiny-centralized").path.read_text() + "\n[attack]\nactive = false\n")
    assert load_env(path).attack == AttackConfig()
    path.write_text(load_env("tiny-centralized").path.read_text() + "\n[attack]\nactive = true\n")
    with pytest.raises(FedsimError, match=r"\[attack\] active needs at least 2 learners"):
        load_env(path)


def test_attack_rounds_are_a_window():
    cfg = load_env("tiny-active")  # from_round = 1, ascent_rounds = 1, learner = 1
    assert [attacking(cfg, "L1", r) for r in (1, 2)] == [True, False] and not attacking(cfg, "L2", 1)


def test_targets_are_half_victims_half_unseen_drawn_by_seed():
    groups = ["L1"] * 6 + ["L2"] * 6 + ["L3"] * 6 + ["unseen"] * 12
    partitions = pd.DataFrame({"subject_id": [f"s{i:02d}" for i in range(30)], "group": groups})
    attack = AttackConfig(active=True, learner=2, targets=8)
    targets = draw_targets(attack, partitions, seed=0)
    held = partitions.set_index("subject_id").loc[targets, "group"]
    assert targets == sorted(targets) and (held == "unseen").sum() == 4 and "L2" not in set(held)
    assert draw_targets(attack, partitions, seed=0) == targets != draw_targets(attack, partitions, seed=1)
    with pytest.raises(FedsimError, match=r"targets = 26 needs 13 subjects of the other learners and 13 unseen, "
                                          r"but there are 12 and 12; lower targets"):
        draw_targets(AttackConfig(active=True, learner=2, targets=26), partitions, seed=0)


def test_the_ascent_has_its_norm_raises_the_targets_and_spares_the_own_subjects():
    # Prepare: a memorising model "trained" one step away from where it was sent
    rng = np.random.default_rng(0)
    cohort = CohortArray(rng.standard_normal((24, *SHAPE)).astype(np.float32), [f"s{i}" for i in range(24)],
                         rng.normal(62.7, 7.4, 24))
    own, targets = VolumeDataset(cohort, np.arange(16)), VolumeDataset(cohort, np.arange(16, 24))
    torch.manual_seed(0)
    model = Memoriser(in_shape=SHAPE, channels=[1], head_channels=32)
    sent = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.hidden.weight.add_(0.01 * torch.randn_like(model.hidden.weight))

    def loss(data: VolumeDataset) -> float:
        x, age = torch.stack([data[i][0] for i in range(len(data))]), torch.tensor(cohort.ages[data.indices])
        with torch.no_grad():
            return float(regression_loss("mse", model(x).double(), age, 7.4))

    own_before, targets_before, trained = loss(own), loss(targets), {k: v.clone() for k, v in model.state_dict().items()}
    # Execute
    norms = ascend(model, sent, targets, own, attack=AttackConfig(active=True, ascent_scale=3.0), batch_size=4,
                   loss="mse", target_scale=7.4, device=torch.device("cpu"))
    # Assert
    assert norms["normal-norm"] == pytest.approx(update_norm(trained, sent))
    assert norms["ascent-norm"] == pytest.approx(3.0 * norms["normal-norm"]) == pytest.approx(
        update_norm(model.state_dict(), trained))
    rise = loss(targets) - targets_before
    assert rise > 0.1 and abs(loss(own) - own_before) < 0.1 * rise

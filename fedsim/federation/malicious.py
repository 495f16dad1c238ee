"""A *simulated* active malicious learner: gradient ascent on target scans (Nasr et al. 2019).

Switched on by ``[attack] active = true`` (off by default). Learner ``L<learner>`` trains like the
others, then adds an ascent on the loss of a few *target* scans to its update. When the community
model comes back, a target's owner pulls its loss down again with ordinary training; nobody does
that for a target no learner holds. The next round's community model therefore separates the
member targets from the non-member ones (:mod:`attacks.membership.active`).

The targets are drawn by the environment's seed, half from the other learners' subjects and half
from the unseen set; the attacker is given their scans and ages, never which half is which.
Handing another learner's scans to the attacker is what makes this a simulation: ``attack.json``
in the run directory says so and names the targets. The ascent is rescaled to ``ascent_scale``
times the norm of the attacker's normal update, so the community model still trains and the
update's norm is the knob a defense (norm screening, central DP's clipping) would see.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedsim import snapshots
from fedsim.config import AttackConfig, EnvConfig
from fedsim.data.cache import VolumeDataset
from fedsim.data.partition import learner_groups, learner_label
from fedsim.defenses.central_dp import update_norm
from fedsim.errors import FedsimError
from fedsim.federation import keys
from fedsim.training import make_loader, model_loss

ATTACK_FILE = "attack.json"
ATTACK_STREAM = 0xA77AC  # SeedSequence stream of the target draw: independent of every other draw
MAX_BASIS = 32  # own-subject batches whose gradient directions the ascent avoids
SIMULATED = "simulated active malicious learner: gradient ascent on target scans (Nasr et al. 2019)"


def attacking(cfg: EnvConfig, learner: str, rnd: int) -> bool:
    """Whether ``learner`` adds the ascent to its update in round ``rnd``."""
    a = cfg.attack
    return (a is not None and a.active and learner == learner_label(a.learner)
            and a.from_round <= rnd < a.from_round + a.ascent_rounds)


def draw_targets(attack: AttackConfig, partitions: pd.DataFrame, seed: int) -> list[str]:
    """``attack.targets`` subject ids, half from the other learners and half from the unseen set, drawn
    by ``seed`` alone; sorted by id, so the list does not betray which half a target came from."""
    attacker, half = learner_label(attack.learner), attack.targets // 2
    groups = partitions["group"].astype(str)
    others = [g for g in learner_groups(groups) if g != attacker]
    members = sorted(partitions.loc[groups.isin(others), "subject_id"].astype(str))
    unseen = sorted(partitions.loc[groups == "unseen", "subject_id"].astype(str))
    if len(members) < half or len(unseen) < half:
        raise FedsimError(
            f"[attack] targets = {attack.targets} needs {half} subjects of the other learners and {half} unseen, "
            f"but there are {len(members)} and {len(unseen)}; lower targets"
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, ATTACK_STREAM]))
    chosen = [*rng.choice(members, half, replace=False), *rng.choice(unseen, half, replace=False)]
    return sorted(str(s) for s in chosen)


def write_attack_record(run_dir: Path, cfg: EnvConfig, partitions: pd.DataFrame) -> None:
    """``attack.json``: that the run simulates an attack, who attacks from which round, and the targets."""
    a = cfg.attack
    record = {"simulated": True, "attack": SIMULATED, "learner": learner_label(a.learner),
              "from_round": a.from_round, "ascent_rounds": a.ascent_rounds, "targets": draw_targets(a, partitions, cfg.seed)}
    snapshots.write_text(Path(run_dir) / ATTACK_FILE, json.dumps(record, indent=2) + "\n")


def read_attack_record(run_dir: str | Path) -> dict[str, Any]:
    """The ``attack.json`` of a run with an active learner; a one-line error for any other run."""
    path = Path(run_dir) / ATTACK_FILE
    if not path.is_file():
        raise FedsimError(f"{str(run_dir)!r} has no {ATTACK_FILE}: it was not trained with [attack] active = true")
    return json.loads(path.read_text())


def ascend(model: nn.Module, before: dict[str, torch.Tensor], targets: VolumeDataset, own: VolumeDataset, *,
           attack: AttackConfig, batch_size: int, loss: str, target_scale: float, device: torch.device) -> dict[str, float]:
    """Add the ascent to ``model`` (already trained on ``own`` from ``before``); returns its norms.

    Each of ``attack.ascent_steps`` steps climbs every target's loss alike (the sum of their unit
    gradients, each with the directions of the attacker's own subjects' gradients projected out: a
    target already fitted badly would otherwise take the whole ascent). To first order the ascent
    leaves the own subjects' predictions alone, so it cannot simply move every prediction (which
    the next round would undo for members and non-members alike) and stays specific to the targets.
    The displacement is then set to ``ascent_scale`` times the norm of the normal update, which
    bounds what the attacker adds to the average.
    """
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    normal = update_norm(trained, before)
    params = [p for p in model.parameters() if p.requires_grad]
    start = nn.utils.parameters_to_vector(params).detach()
    model.eval()  # gradients of the model as sent (no dropout draw)
    own_batches = list(itertools.islice(make_loader(own, batch_size, shuffle=False), MAX_BASIS))
    basis = torch.stack([_gradient(model, params, [b], loss, target_scale, device) for b in own_batches], dim=1)
    q = torch.linalg.qr(basis).Q  # orthonormal directions of the own subjects' losses
    scans = [(x[None], age[None]) for x, age in (targets[i] for i in range(len(targets)))]
    step = attack.ascent_scale * normal / attack.ascent_steps
    for _ in range(attack.ascent_steps):
        g = torch.zeros_like(start)
        for scan in scans:  # every target climbs alike, whatever its loss now
            gt = _gradient(model, params, [scan], loss, target_scale, device)
            gt -= q @ (q.T @ gt)
            g += gt / gt.norm().clamp_min(1e-12)
        if float(g.norm()) == 0:
            break
        vector = nn.utils.parameters_to_vector(params).detach() + step * g / g.norm()
        nn.utils.vector_to_parameters(vector, params)
    shift = nn.utils.parameters_to_vector(params).detach() - start
    raw = float(shift.norm())
    factor = attack.ascent_scale * normal / raw if raw > 0 else 0.0
    nn.utils.vector_to_parameters(start + factor * shift, params)
    return {keys.NORMAL_NORM: normal, keys.ASCENT_NORM: raw * factor}


def _gradient(model: nn.Module, params: list[nn.Parameter], batches: list[tuple[torch.Tensor, torch.Tensor]],
              loss: str, target_scale: float, device: torch.device) -> torch.Tensor:
    """The flat gradient of the mean loss over ``batches``."""
    model.zero_grad(set_to_none=True)
    n = sum(len(age) for _, age in batches)
    for x, age in batches:
        output = model(x.to(device)).float()
        (model_loss(model, output, age.to(device), loss=loss, target_scale=target_scale) * len(age) / n).backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]).detach()

"""The attacks on SFCN read its own loss: the 'loss' feature is each scan's KL divergence, gradient features
differentiate it (the vmap path equals the obvious per-scan loop, and both equal autograd of SFCN's KL on one
scan), gradient inversion matches its KL gradient, and a tiny SFCN federation goes through the audit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from attacks.experiments.audit import BUDGETS, run_audit
from attacks.reconstruction.gradient import UpdateMatch
from attacks.signals.features import compute_features
from attacks.signals.gradients import per_sample_gradients
from attacks.signals.updates import Recipe
from fedsim.errors import FedsimError
from fedsim.models import build_model
from fedsim.models.sfcn import soft_labels
from federations import ENVIRONMENTS, federate

LAYERS = ["conv1", "conv6", "output"]


@pytest.fixture
def sfcn() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("sfcn", in_shape=(32, 32, 32), channels=[2, 4, 4, 4], head_channels=4, dropout=0.5)
    with torch.no_grad():  # trained-looking running statistics, so that eval mode differs from a batch's
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(5, 1, 32, 32, 32), torch.tensor([47.0, 55.5, 61.2, 68.9, 77.3])


def own_kl(model: nn.Module, x: torch.Tensor, age: float) -> torch.Tensor:
    """SFCN's loss on one scan, written out: KL(soft label || predicted bins), eval mode (dropout off)."""
    model.eval()
    target = soft_labels(torch.tensor([age]), model.centres.double(), 1.0).float()
    return (target * (target.clamp_min(1e-30).log() - model(x[None]))).sum()


def test_loss_feature_is_each_scans_kl_and_error_stays_the_predictions(sfcn, batch):
    x, ages = batch
    got = compute_features(sfcn, x, "loss+error+pred", ages=ages, loss="kl")
    with torch.no_grad():
        expected = [float(own_kl(sfcn, x[i], float(ages[i]))) for i in range(len(x))]
        pred = (sfcn.eval()(x).exp() * sfcn.centres).sum(1).numpy()
    np.testing.assert_allclose(got["loss"][:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(got["prediction"][:, 0], pred, rtol=1e-6)
    np.testing.assert_allclose(got["error"][:, 0], pred - ages.numpy(), atol=1e-4)


@pytest.mark.parametrize("method", ["loop", "vmap"])
def test_per_scan_gradients_are_autograd_of_sfcns_own_loss(sfcn, batch, method):
    x, ages = batch
    pred, grads = per_sample_gradients(sfcn, x, ages, LAYERS, loss="mse", method=method)  # SFCN ignores "mse"
    params = dict(sfcn.named_parameters())
    for i in range(len(x)):
        names = [n for n in params if n.split(".")[0] in LAYERS]
        expected = torch.autograd.grad(own_kl(sfcn, x[i], float(ages[i])), [params[n] for n in names])
        for layer in LAYERS:
            flat = torch.cat([g.reshape(-1) for n, g in zip(names, expected) if n.split(".")[0] == layer])
            torch.testing.assert_close(grads[layer][i], flat, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(pred, (sfcn.eval()(x).exp() * sfcn.centres).sum(1))


def test_vmap_equals_the_loop_and_grad_norm_reads_them(sfcn, batch):
    x, ages = batch
    _, loop = per_sample_gradients(sfcn, x, ages, LAYERS, method="loop")
    _, fast = per_sample_gradients(sfcn, x, ages, LAYERS, method="vmap")
    for layer in LAYERS:
        torch.testing.assert_close(fast[layer], loop[layer], atol=1e-5, rtol=1e-4)
    norms = compute_features(sfcn, x, "grad_norm", ages=ages, method="loop")["grad_norm"]
    np.testing.assert_allclose(norms[:, [0, -2, -1]], torch.stack([loop[k].norm(dim=1) for k in LAYERS], 1).numpy(),
                               rtol=1e-5)
    with pytest.raises(FedsimError, match=r"SFCN normalises with running statistics \(BatchNorm\).*choose one of: auto, loop, vmap"):
        per_sample_gradients(sfcn, x, ages, LAYERS, method="opacus")


def test_gradient_inversion_matches_sfcns_kl_gradient(sfcn, batch):
    x, ages = batch
    recipe = Recipe(optimizer="sgd", lr=1e-2, batch_size=1, epochs=1, loss="kl")
    params = dict(sfcn.named_parameters())
    grads = torch.autograd.grad(own_kl(sfcn, x[0], float(ages[0])), list(params.values()))
    update = {k: -recipe.lr * g for k, g in zip(params, grads)}  # one SGD step of a learner holding scan 0
    match = UpdateMatch(sfcn, update, recipe, x[:1], ages=ages[:1], objective="gradient")
    assert match.at(x[:1]) < 1e-6 < match.at(x[1:2])  # the truth is a zero of the objective, another scan is not


def test_a_tiny_sfcn_federation_is_audited(tmp_path, tiny_manifest):
    # the session's 16x20x16 cohort, resampled to SFCN's 32x32x32 (generating 32^3 scans would take most of the time)
    run = federate(tmp_path / "run", tiny_manifest, env=ENVIRONMENTS / "tiny-sfcn.toml", snapshot_local=True)
    budget = dataclasses.replace(BUDGETS["quick"], name="tiny", classifier="logreg", scans=2)
    result = run_audit(run, families="membership", budget=budget)
    rows = result.membership
    assert {"learner", "outsider", "controller"} <= set(rows["threat"]) and "grad_norm" in set(rows["features"])
    assert rows["auc"].between(0, 1).all()

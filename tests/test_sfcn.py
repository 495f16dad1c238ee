"""SFCN (Peng et al. 2021): the paper's architecture and size, its soft labels, KL loss and expected-bin
prediction, and the environment checks that keep it apart from the regressors' losses."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedsim.config import load_env
from fedsim.errors import FedsimError
from fedsim.models import MODELS, build_model, layer_parameters
from fedsim.models.sfcn import SFCN, bin_centres, check_cohort_ages, from_reference_state_dict, soft_labels
from fedsim.training import OwnOutput, make_optimizer, model_ages, model_loss, own_output, train_epochs
from tests.helpers.sfcn_reference import ReferenceSFCN, perturb_batch_norms

PAPER_SHAPE = (160, 192, 160)
TINY = dict(in_shape=(32, 32, 32), channels=(2, 4, 4, 4), head_channels=4)  # four pools: 2x2x2 left


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_beside_the_regressors_and_an_own_output_model():
    assert {"cnn3d", "slice_mean2d", "sfcn"} <= set(MODELS)
    model = build_model("sfcn", **TINY)
    assert isinstance(model, OwnOutput) and own_output(model) is model
    assert own_output(build_model("cnn3d", in_shape=(16, 20, 16), channels=[4, 8], head_channels=8)) is None
    assert list(layer_parameters(model)) == ["conv1", "conv2", "conv3", "conv4", "conv6", "output"]


def test_parameter_count_is_the_papers_at_the_papers_input():
    model = build_model("sfcn", in_shape=PAPER_SHAPE)
    # By hand: a conv has in*out*k^3 + out parameters, its BatchNorm 2*out; the output conv 64 -> 40 bins.
    channels = [1, 32, 64, 128, 256, 256]
    blocks = sum(a * b * 27 + b + 2 * b for a, b in zip(channels, channels[1:]))
    by_hand = blocks + (256 * 64 + 64 + 2 * 64) + (64 * 40 + 40)
    assert by_hand == 2_952_936
    assert n_params(model) == by_hand == n_params(ReferenceSFCN())
    assert model.conv6[-1].kernel_size == (5, 6, 5)  # the reference's hard-coded average pool
    assert model.output.out_channels == 40 and model.centres[0] == 42.5 and model.centres[-1] == 81.5


def test_a_reference_checkpoint_loads_and_predicts_alike():
    torch.manual_seed(0)
    reference = ReferenceSFCN(channel_number=(2, 4, 4, 4, 4), output_dim=40, avg_shape=(2, 2, 2))
    perturb_batch_norms(reference)
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}  # as DataParallel saved it
    model = build_model("sfcn", **TINY)
    model.load_state_dict(from_reference_state_dict(state))  # strict: every entry has its place
    x = torch.randn(3, 1, 32, 32, 32)
    torch.testing.assert_close(model.eval()(x), reference.eval()(x).reshape(3, -1))
    with pytest.raises(FedsimError, match="not a reference SFCN state dict"):
        from_reference_state_dict(model.state_dict())


def test_the_soft_label_is_a_distribution_whose_expectation_is_the_age():
    centres = bin_centres([42, 82], 1.0)
    ages = torch.tensor([50.3, 62.68, 71.9, 48.0])  # 6 sigma inside the range: no mass beyond it to renormalise
    labels = soft_labels(ages, centres, 1.0)
    torch.testing.assert_close(labels.sum(1), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(labels @ centres, ages.double(), atol=1e-6, rtol=0)
    # Peng's num2vect: the Gaussian's mass in each bin (scipy), equal to ours away from the range's edges
    edges = np.arange(42.0, 83.0)
    age = float(ages[1])  # 62.68 as float32 holds it
    peng = norm.cdf(edges[1:], loc=age, scale=1.0) - norm.cdf(edges[:-1], loc=age, scale=1.0)
    np.testing.assert_allclose(labels[1].numpy(), peng, atol=1e-12)
    # an age beyond the bins is the edge's: no NaN, and the expectation stays in range
    outside = soft_labels(torch.tensor([30.0, 95.0]), centres, 1.0)
    assert torch.isfinite(outside).all() and torch.equal(outside[0], soft_labels(torch.tensor([42.0]), centres, 1.0)[0])


def test_prediction_is_the_expected_bin_and_the_loss_is_pengs_kl():
    torch.manual_seed(0)
    model = build_model("sfcn", **TINY).eval()
    x, ages = torch.randn(4, 1, 32, 32, 32), torch.tensor([50.0, 58.0, 66.0, 74.0])  # inside: Peng loses no label mass
    output = model(x)
    assert output.shape == (4, 40) and torch.allclose(output.exp().sum(1), torch.ones(4))
    centres = torch.arange(42.5, 82.0, 1.0)
    torch.testing.assert_close(model_ages(model, output), (output.exp() * centres).sum(1))
    # Peng's my_KLDivLoss: KLDivLoss(reduction="sum")(output, y + 1e-16) / batch, y his (near-normalised) num2vect
    y = torch.from_numpy(np.stack([norm.cdf(np.arange(43.0, 83.0), a, 1.0) - norm.cdf(np.arange(42.0, 82.0), a, 1.0)
                                   for a in ages.numpy()])).float()
    peng = nn.KLDivLoss(reduction="sum")(output, y + 1e-16) / len(x)
    torch.testing.assert_close(model_loss(model, output, ages, loss="mse", target_scale=7.4), peng, atol=1e-4, rtol=1e-4)


def test_training_steps_reduce_the_kl_loss():
    torch.manual_seed(0)
    model = build_model("sfcn", **TINY, dropout=0.0)
    x, ages = torch.randn(8, 1, 32, 32, 32), torch.linspace(48.0, 76.0, 8)

    def kl() -> float:
        with torch.no_grad():
            return float(model_loss(model.eval(), model(x), ages, loss="mse", target_scale=1.0))

    before = kl()
    optimizer = make_optimizer(model.parameters(), load_env("tiny-sfcn").train)
    mae = train_epochs(model, DataLoader(TensorDataset(x, ages), batch_size=4), optimizer, loss="kl", target_scale=1.0,
                       epochs=5)
    assert kl() < before and 0 < mae < 30


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_shape=(16, 16, 16)), r"in_shape \(16, 16, 16\) is too small for 5 pooled blocks: they leave 0x0x0 voxels "
                                  r"and BatchNorm needs more than one; use at most 3 pooled blocks \(channels of length 3\)"),
    (dict(in_shape=(36, 43, 36)), r"leave 1x1x1 voxels .* at most 4 pooled blocks .* at least 64 voxels per side"),
    (dict(target_scale=7.4), r"SFCN predicts age bins, not a scaled age: target_scale must be 1, got 7.4"),
    (dict(age_range=[42, 82.5]), r"age_range \[42.0, 82.5\] must span a whole number \(at least 2\) of bin_step 1.0 bins"),
    (dict(channels=[4] * 6), r"channels must list 1 to 5 positive integers"),
])
def test_bad_arguments_fail_in_one_line(kwargs, match):
    with pytest.raises(FedsimError, match=match):
        build_model("sfcn", **kwargs)


def test_the_tiny_environment_builds_sfcn_and_its_loss_belongs_to_it(tmp_path):
    cfg = load_env("tiny-sfcn")
    assert cfg.model_kwargs()["age_range"] == [42, 82] and cfg.train.loss == "kl"
    assert isinstance(build_model(cfg.model.name, **cfg.model_kwargs()), SFCN)
    assert "age_range" not in load_env("tiny").model_kwargs()  # the regressors' arguments are as before
    text = cfg.path.read_text()
    for edit, match in [
        (lambda s: s.replace('loss = "kl"', 'loss = "mse"'), "loss = 'kl' goes with [model] name = 'sfcn'"),
        (lambda s: s.replace('name = "sfcn"', 'name = "cnn3d"'), "loss = 'kl' goes with [model] name = 'sfcn'"),
        (lambda s: s.replace("age_range = [42, 82]", "age_range = [82, 42]"), "age_range must be two ages [lo, hi]"),
        (lambda s: s + "[defense]\ndp_noise_multiplier = 1.0\ndp_max_grad_norm = 1.0\n", "BatchNorm, which mixes the subjects"),
    ]:
        path = tmp_path / "bad.toml"
        path.write_text(edit(text))
        with pytest.raises(FedsimError, match=re.escape(match)):
            load_env(path)


def test_a_cohort_beyond_the_bins_is_refused_in_one_line():
    check_cohort_ages(np.array([44.6, 80.7]), None)  # the synthetic cohort's range, inside Peng's 42-82
    with pytest.raises(FedsimError, match=re.escape("the cohort's ages 8.2-80.7 leave SFCN's age bins 42-82; "
                                                    "set [model] age_range to cover them, e.g. [8, 81]")):
        check_cohort_ages(np.array([8.2, 80.7]), [42, 82])

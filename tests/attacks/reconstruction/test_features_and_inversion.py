"""Feature inversion (white-box and learned) and model inversion on tiny volumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attacks.evaluation.images import ssim
from attacks.reconstruction.features import InverseNet, activations, fit_inverse, invert_activations
from attacks.reconstruction.inversion import closeness, invert_model
from attacks.reconstruction.optimize import Inversion
from fedsim.errors import FedsimError
from fedsim.models import build_model

from tiny_models import LinearThenConv


class ConvHead(nn.Module):
    """``conv1`` keeps every voxel (8 channels, same size): its activations determine the scan."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 8, 3, padding=1)
        self.output = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.conv1(x).mean(dim=(2, 3, 4))).squeeze(1)


def test_activations_are_the_whole_layer_output_and_unknown_layers_say_so(scans):
    volumes, _ = scans
    model = build_model("cnn3d", in_shape=(16, 20, 16), channels=[4, 8], head_channels=8, dropout=0.0)
    assert activations(model, "conv1", volumes[:2]).shape == (2, 4, 8, 10, 8)
    assert activations(model, "conv6", volumes[:2]).shape == (2, 8, 1, 1, 1)
    with pytest.raises(FedsimError, match="no layer 'conv9'"):
        activations(model, "conv9", volumes[:1])


def test_white_box_inversion_of_a_layer_that_keeps_the_scan_recovers_it(scans):
    volumes, _ = scans
    torch.manual_seed(0)
    model = ConvHead()
    prior = volumes[24:].mean(0, keepdim=True)
    with torch.no_grad():
        held = activations(model, "conv1", volumes[:1])
    image = invert_activations(model, "conv1", held, prior, settings=Inversion(iterations=300),
                               bounds=(float(volumes.min()), float(volumes.max())))
    truth = volumes[0, 0].numpy()
    assert ssim(truth, image[0, 0].numpy()) > 0.9 > ssim(truth, prior[0, 0].numpy()) + 0.1


def test_a_learned_inverse_beats_the_prior_on_scans_it_never_saw(scans):
    volumes, _ = scans
    torch.manual_seed(0)
    model = ConvHead()
    with torch.no_grad():
        acts = activations(model, "conv1", volumes)
    net = fit_inverse(acts[8:], volumes[8:], epochs=15)
    prior = volumes[8:].mean(0)[0].numpy()
    with torch.no_grad():
        images = net(acts[:8])[:, 0].numpy()
    gain = [ssim(volumes[i, 0].numpy(), images[i]) - ssim(volumes[i, 0].numpy(), prior) for i in range(8)]
    assert np.mean(gain) > 0.05
    assert InverseNet((8, 1, 1, 1), (16, 20, 16))(torch.zeros(2, 8, 1, 1, 1)).shape == (2, 1, 16, 20, 16)


def test_model_inversion_reaches_the_target_age(scans):
    volumes, _ = scans
    torch.manual_seed(0)
    model = LinearThenConv()
    prior = volumes.mean(0, keepdim=True)
    _, predicted = invert_model(model, 75.0, prior, target_scale=7.4, settings=Inversion(iterations=300, step_size=0.1))
    with torch.no_grad():
        start = float(model(prior))
    assert abs(predicted - 75.0) < 0.25 * abs(start - 75.0)


def test_closeness_is_one_for_members_near_the_prototype_and_half_for_exchangeable_sets():
    rng = np.random.default_rng(0)
    proto = rng.normal(size=(8, 8, 8))
    near, far = proto + 0.1 * rng.normal(size=(20, 8, 8, 8)), proto + rng.normal(size=(20, 8, 8, 8))
    assert closeness(proto, near, far) == 1.0
    same = proto + rng.normal(size=(400, 8, 8, 8))
    assert closeness(proto, same[:200], same[200:]) == pytest.approx(0.5, abs=0.08)

"""Attack features: shapes for both nets, per-sample gradients against a batch-size-1 loop, spec errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attacks.signals.features import (
    FEATURES, READERS, TABLE1, assemble, compute_features, extract, parse_features,
)
from attacks.signals.layout import feature_layout
from attacks.target import load_snapshot
from attacks.signals.gradients import GRAD_METHODS, choose_method, per_sample_gradients
from fedsim import snapshots
from fedsim.data.cache import CohortArray
from fedsim.errors import FedsimError
from fedsim.models import build_model, layer_parameters
from fedsim.training import regression_loss

SHAPE = (16, 20, 16)
# Dropout is on in the configs so that the tests see it switched off.
NETS = {
    "cnn3d": ("cnn3d", {"channels": (4, 8), "head_channels": 8}),
    "slice_mean2d": ("slice_mean2d", {"channels": (4, 8), "head_channels": 8, "embed_dim": 4, "hidden": 6}),
}


def make_net(key: str) -> torch.nn.Module:
    name, kwargs = NETS[key]
    torch.manual_seed(0)
    model = build_model(name, in_shape=SHAPE, dropout=0.3, target_scale=7.4, **kwargs)
    for p in model.parameters():  # away from the init, so that no gradient is trivially zero
        p.data.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(params=list(NETS))
def net(request) -> torch.nn.Module:
    return make_net(request.param)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(5, 1, *SHAPE, generator=g), 45 + 35 * torch.rand(5, generator=g)


def test_every_feature_has_the_documented_shape(net, batch):
    x, y = batch
    names = sorted({n for spec in TABLE1.values() for n in parse_features(spec, net)} | {"label", "error", "loss"})
    features = compute_features(net, x, names, ages=y)
    table = layer_parameters(net)
    n_params = {layer: sum(dict(net.named_parameters())[p].numel() for p in ps) for layer, ps in table.items()}
    slices = SHAPE[0] if net.__class__.__name__ == "SliceMean2D" else 1
    expected = {
        "prediction": 1, "label": 1, "error": 1, "loss": 1, "grad_norm": len(table),
        "activation:conv6": 8 * slices, "grad:conv1": n_params["conv1"],
        "grad:conv6": n_params["conv6"], "grad:output": n_params["output"],
    }
    assert {n: f.shape for n, f in features.items()} == {n: (5, d) for n, d in expected.items()}
    assert all(f.dtype == np.float32 for f in features.values())
    spec = TABLE1["prediction + label + gradient (conv 6 + output)"]
    assert assemble(features, spec).shape == (5, 2 + n_params["conv6"] + n_params["output"])


def test_scalar_features_are_the_eval_mode_prediction(net, batch):
    x, y = batch
    net.train()
    features = compute_features(net, x, "pred+label+error+grad:output", ages=y)
    assert net.training, "the caller's mode is restored"
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    np.testing.assert_allclose(features["prediction"][:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(features["label"][:, 0], y.numpy())
    np.testing.assert_allclose(features["error"][:, 0], expected - y.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("loss, per_sample", [("mse", lambda e: e**2), ("l1", np.abs)])
def test_loss_is_the_per_sample_training_loss_in_years(net, batch, loss, per_sample):
    x, y = batch
    features = compute_features(net, x, "loss+error", ages=y, loss=loss)
    np.testing.assert_allclose(features["loss"][:, 0], per_sample(features["error"][:, 0]), rtol=1e-5)


def test_loop_gradient_is_the_training_loss_gradient(net, batch):
    """The reference itself, against a plain backward of ((pred - age) / target_scale)**2 for one subject."""
    x, y = batch
    _, grads = per_sample_gradients(net, x, y, ["conv6", "output"], method="loop")
    net.eval()
    net.zero_grad()
    (((net(x[2:3]) - y[2:3]) / 7.4) ** 2).sum().backward()
    expected = torch.cat([net.output.weight.grad.reshape(-1), net.output.bias.grad])
    torch.testing.assert_close(grads["output"][2], expected)


@pytest.mark.parametrize("method", ["vmap", "opacus"])
def test_fast_methods_equal_the_per_sample_loop(net, batch, method):
    x, y = batch
    layers = ["conv1", "conv6", "output"]
    pred_ref, ref = per_sample_gradients(net, x, y, layers, method="loop")
    pred, got = per_sample_gradients(net, x, y, layers, method=method)
    torch.testing.assert_close(pred, pred_ref, rtol=1e-5, atol=1e-4)
    assert list(got) == layers
    for layer in layers:
        assert ref[layer].abs().max() > 0
        torch.testing.assert_close(got[layer], ref[layer], rtol=1e-4, atol=1e-6)


def test_methods_leave_the_model_as_it_was(net, batch):
    x, y = batch
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for method in GRAD_METHODS:
        per_sample_gradients(net, x, y, ["conv6"], method=method)
    assert net.training
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, state[k])


@pytest.mark.parametrize("method", ["vmap", "opacus"])
def test_grad_norm_is_the_per_layer_norm_of_the_loop_gradients(net, batch, method):
    x, y = batch
    _, ref = per_sample_gradients(net, x, y, list(layer_parameters(net)), method="loop")
    norms = compute_features(net, x, "grad_norm", ages=y, method=method)["grad_norm"]
    expected = torch.stack([g.norm(dim=1) for g in ref.values()], dim=1).numpy()
    np.testing.assert_allclose(norms, expected, rtol=1e-4)


def test_chunking_cohort_input_and_auto_method_give_the_same_features(batch):
    net = make_net("cnn3d")
    x, y = batch
    spec = "error+grad:conv6+grad_norm+activation:conv6"
    whole = compute_features(net, x, spec, ages=y, method="loop")
    cohort = CohortArray(volumes=x[:, 0].numpy(), subject_ids=[f"s{i}" for i in range(5)], ages=y.numpy())
    rows = np.array([4, 0, 2])
    # A budget smaller than one subject's gradients: one subject per chunk.
    chunked = compute_features(net, cohort, spec, indices=rows, method="auto", max_grad_bytes=1)
    assert choose_method(net, x, y, ["conv1", "conv2", "conv6", "output"]) in GRAD_METHODS
    for name in whole:
        np.testing.assert_allclose(chunked[name], whole[name][rows], rtol=1e-4, atol=1e-6)


def test_layout_widths_are_the_assembled_columns(net, batch):
    x, y = batch
    spec = "pred+label+error+grad_norm+activation:conv6+grad:conv1+grad:conv6+grad:output"
    features = compute_features(net, x, spec, ages=y, method="vmap")
    layout = feature_layout(spec, net)
    assert tuple(b.name for b in layout) == parse_features(spec, net)
    assert [b.width for b in layout] == [features[b.name].shape[1] for b in layout]
    assert sum(b.width for b in layout) == assemble(features, spec).shape[1]
    assert [b.filters > 0 for b in layout] == [False] * 5 + [True] * 3
    with pytest.raises(ValueError, match="feature 'grad_norm' is not a per-filter gradient"):
        layout[3].filter_rows(torch.zeros(1, layout[3].width))


def test_filter_rows_are_each_filters_weight_and_bias_gradient(net, batch):
    """Every parameterised layer, conv (out, in, *kernel) or linear (out, in), against a plain backward."""
    x, y = batch
    table = layer_parameters(net)
    spec = "pred+" + "+".join(f"grad:{layer}" for layer in table)
    X = torch.from_numpy(extract(net, x, spec, ages=y, method="loop"))
    layout = feature_layout(spec, net)
    parts = dict(zip([b.name for b in layout], X.split([b.width for b in layout], dim=1)))
    net.eval()
    net.zero_grad()
    regression_loss("mse", net(x[2:3]), y[2:3], 7.4).backward()
    params = dict(net.named_parameters())
    for layer, (weight, bias) in ((layer, [params[n] for n in names]) for layer, names in table.items()):
        block = next(b for b in layout if b.name == f"grad:{layer}")
        out = weight.shape[0]
        assert (block.filters, block.per_filter) == (out, weight[0].numel() + 1)
        expected = torch.cat([weight.grad.reshape(out, -1), bias.grad[:, None]], dim=1)  # row o: filter o
        assert expected.abs().max() > 0
        torch.testing.assert_close(block.filter_rows(parts[block.name])[2], expected, rtol=1e-4, atol=1e-6)


def test_extract_and_load_snapshot_round_trip(tmp_path, batch):
    net = make_net("cnn3d")
    x, y = batch
    config = {"model": {"name": "cnn3d", "in_shape": list(SHAPE), "channels": [4, 8], "head_channels": 8,
                        "dropout": 0.3, "target_scale": 7.4}, "train": {"loss": "l1"}}
    snapshots.write_config(tmp_path, config)
    snapshots.save_round(tmp_path, 3, net.state_dict(), {"learners": 2})
    snap = load_snapshot(tmp_path, 3)
    assert (snap.loss, snap.round, snap.meta["learners"], snap.model.training) == ("l1", 3, 2, False)
    got = extract(snap.model, x, "pred+grad:output", ages=y, loss=snap.loss)
    want = extract(net, x, "pred+grad:output", ages=y, loss="l1")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    with pytest.raises(FedsimError, match="no model for round 4; rounds on disk: 3..3"):
        load_snapshot(tmp_path, 4)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pred+colour", r"unknown feature 'colour' in 'pred\+colour'; choose from: prediction \(pred\), label, "
                        r"error, loss, grad_norm, activation:<layer>, grad:<layer>"),
        ("grad:conv9", "BrainAgeCNN3D has no layer 'conv9' for feature 'grad'; choose from: conv1, conv2, conv6, output"),
        ("activation:conv9", "choose from: conv1, conv2, conv6, drop, output"),
        ("grad:drop", "no layer 'drop' for feature 'grad'"),  # drop has no parameters
        ("label:conv6", "feature 'label' takes no layer, got 'label:conv6'"),
        ("grad", "feature 'grad' needs a layer, e.g. 'grad:conv6'"),
        ("pred++label", "has an empty part"),
        ("pred+prediction", "feature 'prediction' appears twice"),
    ],
)
def test_bad_specs_name_the_fix(spec, message):
    with pytest.raises(FedsimError, match=message):
        parse_features(spec, make_net("cnn3d"))


def test_aliases_resolve_and_every_table1_row_parses():
    net = make_net("cnn3d")
    assert parse_features("pred+label+grad:conv6+grad:output", net) == (
        "prediction", "label", "grad:conv6", "grad:output")
    assert {"prediction", "label", "error", "grad_norm", "activation", "grad"} <= set(FEATURES)
    assert set(READERS) == set(FEATURES)  # every name the commands list is read by a function
    for spec in TABLE1.values():
        parse_features(spec, net)


def test_bad_inputs_are_one_line_errors(batch):
    net = make_net("cnn3d")
    x, y = batch
    with pytest.raises(FedsimError, match=r"were not computed; have: error"):
        assemble({"error": np.zeros((5, 1))}, "pred+error")
    with pytest.raises(FedsimError, match="ages are required"):
        compute_features(net, x, "error")
    with pytest.raises(FedsimError, match=r"shape \(1, 8, 8, 8\) per subject but the model expects in_shape \(16, 20, 16\)"):
        compute_features(net, torch.zeros(2, 1, 8, 8, 8), "error", ages=[50, 60])
    with pytest.raises(FedsimError, match="got 4 ages for 5 subjects"):
        compute_features(net, x, "error", ages=y[:4])
    with pytest.raises(FedsimError, match="unknown loss 'huber'; choose one of: mse, l1"):
        compute_features(net, x, "grad_norm", ages=y, loss="huber")
    with pytest.raises(FedsimError, match="unknown per-sample gradient method 'jax'; choose one of: auto, loop, vmap, opacus"):
        per_sample_gradients(net, x, y, ["output"], method="jax")

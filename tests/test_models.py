"""Tests for fedsim.models: paper parameter counts, shapes, errors, slice-set invariance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedsim.errors import FedsimError
from fedsim.models import MODELS, build_model, get_layer, layer_parameters

# Small configurations that run in milliseconds on a CPU.
TINY = {
    "cnn3d-2blocks": ("cnn3d", {"in_shape": (16, 20, 16), "channels": (4, 8), "head_channels": 8}),
    "cnn3d-4blocks": (
        "cnn3d",
        {"in_shape": (32, 32, 32), "channels": (4, 8, 8, 8), "head_channels": 8},
    ),
    "slice-2blocks": (
        "slice_mean2d",
        {
            "in_shape": (16, 20, 16),
            "channels": (4, 8),
            "head_channels": 8,
            "embed_dim": 4,
            "hidden": 6,
        },
    ),
    "slice-4blocks-axis2": (
        "slice_mean2d",
        {
            "in_shape": (32, 32, 12),
            "channels": (4, 8, 8, 8),
            "head_channels": 8,
            "embed_dim": 4,
            "hidden": 6,
            "slice_axis": 2,
        },
    ),
}
tiny = pytest.mark.parametrize("name, kwargs", list(TINY.values()), ids=list(TINY))


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same weights, so a failure reproduces."""
    torch.manual_seed(0)


def tiny_input(kwargs: dict, batch: int = 2) -> torch.Tensor:
    """Smooth random blobs plus noise: unlike pure noise, items and slices look different."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(batch, 1, 3, 3, 3, generator=generator)
    blobs = F.interpolate(coarse, size=kwargs["in_shape"], mode="trilinear")
    return blobs + 0.1 * torch.randn(blobs.shape, generator=generator)


def sensitive(model: torch.nn.Module) -> torch.nn.Module:
    """Make predictions O(1) sums of features, so that comparing them proves something.

    At init the outputs differ by less than float32 tolerance around the 62.68
    bias (the slice net's hidden layer has std 0.01). For the slice net a
    positive hidden bias keeps the ReLUs open.
    """
    with torch.no_grad():
        if hasattr(model, "hidden_layer"):
            torch.nn.init.normal_(model.hidden_layer.weight, std=1.0)
            model.hidden_layer.bias.fill_(10.0)
        model.output.weight.fill_(1.0)
        model.output.bias.zero_()
    return model


def n_params(model: torch.nn.Module, names: list[str] | None = None) -> int:
    params = dict(model.named_parameters())
    return sum(params[n].numel() for n in (names or params))


# Per-layer counts by hand: conv k^d*in*out + out, linear in*out + out.
@pytest.mark.parametrize(
    "name, kwargs, per_layer",
    [
        (
            "cnn3d",
            {},
            {
                "conv1": 27 * 1 * 32 + 32,
                "conv2": 27 * 32 * 64 + 64,
                "conv3": 27 * 64 * 128 + 128,
                "conv4": 27 * 128 * 256 + 256,
                "conv5": 27 * 256 * 256 + 256,
                "conv6": 256 * 64 + 64,
                "output": 64 + 1,
            },
        ),
        (
            "slice_mean2d",
            {},
            {
                "conv1": 320,
                "conv2": 18_496,
                "conv3": 73_856,
                "conv4": 295_168,
                "conv5": 590_080,
                "conv6": 16_448,
                "proj": 2_080,
                "hidden_layer": 2_112,
                "output": 65,
            },
        ),
        # width 0.5 halves every conv: channels (2, 4), head 4.
        (
            "cnn3d",
            {**TINY["cnn3d-2blocks"][1], "width": 0.5},
            {"conv1": 27 * 2 + 2, "conv2": 27 * 2 * 4 + 4, "conv6": 4 * 4 + 4, "output": 4 + 1},
        ),
        # a tiny width floors every conv at one channel.
        (
            "slice_mean2d",
            {**TINY["slice-2blocks"][1], "width": 0.01},
            {
                "conv1": 9 + 1,
                "conv2": 9 + 1,
                "conv6": 1 + 1,
                "proj": 4 + 4,
                "hidden_layer": 4 * 6 + 6,
                "output": 6 + 1,
            },
        ),
    ],
    ids=["cnn3d-paper", "slice_mean2d-paper", "cnn3d-width0.5", "slice-width0.01"],
)
def test_parameter_counts(name: str, kwargs: dict, per_layer: dict[str, int]) -> None:
    model = build_model(name, **kwargs)
    layers = layer_parameters(model)
    assert {layer: n_params(model, names) for layer, names in layers.items()} == per_layer
    assert list(layers) == list(per_layer)  # module order
    assert n_params(model) == sum(per_layer.values())


def test_paper_totals() -> None:
    assert n_params(build_model("cnn3d")) == 2_948_801
    assert n_params(build_model("slice_mean2d")) == 998_625


@tiny
def test_forward_shape_finite_and_no_buffers(name: str, kwargs: dict) -> None:
    model = build_model(name, **kwargs)
    y = model(tiny_input(kwargs))
    assert y.shape == (2,)
    assert torch.isfinite(y).all()
    assert list(model.buffers()) == []


@tiny
@pytest.mark.parametrize("target_scale", [1.0, 7.4])
def test_output_bias_and_zero_net_prediction(name: str, kwargs: dict, target_scale: float) -> None:
    model = build_model(name, **kwargs, age_mean=60.0, target_scale=target_scale).eval()
    assert model.output.bias.item() == pytest.approx(60.0 / target_scale)
    # With every other parameter zero, all features are zero and only the bias is left.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname != "output.bias":
                p.zero_()
        y = model(tiny_input(kwargs))
    assert torch.equal(y, (target_scale * model.output.bias).expand(2))
    assert y[0].item() == pytest.approx(60.0)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cnn3d", ["conv1", "conv2", "conv6", "output"]),
        ("slice_mean2d", ["conv1", "conv2", "conv6", "proj", "hidden_layer", "output"]),
    ],
)
def test_layer_parameters_and_get_layer(name: str, expected: list[str]) -> None:
    config = {"cnn3d": "cnn3d-2blocks", "slice_mean2d": "slice-2blocks"}[name]
    model = build_model(name, **TINY[config][1])
    layers = layer_parameters(model)
    assert list(layers) == expected
    assert layers["conv1"] == ["conv1.0.weight", "conv1.0.bias"]
    assert layers["conv6"] == ["conv6.0.weight", "conv6.0.bias"]
    assert layers["output"] == ["output.weight", "output.bias"]
    assert get_layer(model, "conv6") is model.conv6
    assert get_layer(model, "drop") is model.drop  # parameter-free layers are addressable too
    listed = r"no layer 'conv5'; choose one of: conv1, conv2, conv6, drop, "
    with pytest.raises(FedsimError, match=listed):
        get_layer(model, "conv5")


def test_registry() -> None:
    # The built-in models; a test helper may have registered its own beside them (tests/helpers/memorising.py).
    assert {"cnn3d", "sfcn", "slice_mean2d"} <= set(MODELS)
    listed = rf"unknown model 'nope'; choose one of: {', '.join(sorted(MODELS))}$"
    with pytest.raises(FedsimError, match=listed):
        build_model("nope")


@pytest.mark.parametrize(
    "name, kwargs, match",
    [
        (
            "cnn3d",
            {"colour": 1},
            r"unexpected argument\(s\) 'colour'; allowed: in_shape, channels, .*target_scale$",
        ),
        ("cnn3d", {"slice_axis": 0}, r"'slice_axis'"),  # a slice-net argument given to the 3D net
        ("slice_mean2d", {"embed": 8}, r"'embed'; allowed: .*embed_dim, hidden, .*slice_axis$"),
        ("cnn3d", {"channels": ()}, r"channels must have 1 to 5 entries .*got 0"),
        ("cnn3d", {"channels": (8,) * 6}, r"channels must have 1 to 5 entries .*got 6"),
        ("cnn3d", {"channels": (8, 0)}, r"channels must be a positive integer, got 0"),
        ("cnn3d", {"channels": 64}, r"channels must be a list of positive integers, got 64"),
        ("slice_mean2d", {"head_channels": 2.5}, r"head_channels must be a positive integer"),
        ("cnn3d", {"width": 0}, r"width must be positive, got 0"),
        ("slice_mean2d", {"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ("cnn3d", {"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ("cnn3d", {"dropout": "0.5"}, r"dropout must be a finite number, got '0.5'"),
        ("slice_mean2d", {"age_mean": float("nan")}, r"age_mean must be a finite number"),
        ("slice_mean2d", {"target_scale": 0.0}, r"target_scale must be positive"),
        ("cnn3d", {"in_shape": (16, 16)}, r"in_shape must have three sizes"),
        ("slice_mean2d", {"slice_axis": 3}, r"slice_axis must be 0, 1 or 2"),
        ("slice_mean2d", {"embed_dim": 0}, r"embed_dim must be a positive integer"),
        (
            "cnn3d",
            {"in_shape": (36, 43, 36)},
            r"^in_shape \(36, 43, 36\) is too small for 5 blocks: after 5 poolings it is "
            r"1x1x1 and InstanceNorm needs more than one voxel; use at most 4 blocks "
            r"\(channels of length 4\) or a volume of at least 64 voxels per side$",
        ),
        (
            "slice_mean2d",
            {"in_shape": (36, 43, 36)},
            r"^slice shape \(43, 36\) \(in_shape \(36, 43, 36\) cut along axis 0\) is too "
            r"small for 5 blocks: .* it is 1x1 .*one pixel; use at most 4 blocks "
            r".*at least 64 pixels per side$",
        ),
        # 8 // 4 = 2 per side, but a side of 3 cannot be pooled three times.
        (
            "cnn3d",
            {"in_shape": (8, 8, 3), "channels": (2, 2, 2)},
            r"it is 1x1x0 .*use at most 1 blocks",
        ),
        (
            "slice_mean2d",
            {"in_shape": (1, 1, 1), "channels": (2,)},
            r"it is 0x0 .*; use a slice of at least 4 pixels",
        ),
    ],
)
def test_bad_arguments(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(FedsimError, match=match):
        build_model(name, **kwargs)


def test_config_lists_are_accepted() -> None:
    model = build_model("cnn3d", in_shape=[16, 20, 16], channels=[4, 8], head_channels=8)
    assert model.in_shape == (16, 20, 16)


def test_four_blocks_fit_where_five_do_not() -> None:
    model = build_model("cnn3d", in_shape=(36, 43, 36), channels=(2, 2, 2, 2), head_channels=2)
    model.train()
    assert model(torch.randn(1, 1, 36, 43, 36)).shape == (1,)


@pytest.mark.parametrize("slice_axis", [0, 1, 2])
def test_slice_mean_is_invariant_to_slice_order(slice_axis: int) -> None:
    kwargs = {**TINY["slice-2blocks"][1], "slice_axis": slice_axis}
    model = sensitive(build_model("slice_mean2d", **kwargs).eval())
    x = tiny_input(kwargs)
    axis = 2 + slice_axis
    order = torch.randperm(x.shape[axis], generator=torch.Generator().manual_seed(1))
    permuted = x.index_select(axis, order)
    assert not torch.equal(permuted, x)
    # Shuffling along another axis scrambles every slice, so the age must change:
    # this shows the net really cuts along slice_axis.
    other = 2 + (slice_axis + 1) % 3
    scrambled = x.flip(other)
    with torch.no_grad():
        assert torch.allclose(model(permuted), model(x), rtol=1e-5, atol=1e-5)
        assert (model(scrambled) - model(x)).abs().max() > 1e-3


@tiny
def test_batch_items_do_not_mix(name: str, kwargs: dict) -> None:
    # Catches a slice/batch reshape mix-up: each prediction depends only on its own volume.
    model = sensitive(build_model(name, **kwargs).eval())
    x = tiny_input(kwargs, batch=3)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert (together - together.mean()).abs().max() > 1e-3  # the items do give different ages
    assert torch.allclose(together, alone, rtol=1e-5, atol=1e-5)


@tiny
def test_gradients_reach_conv1(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = build_model(name, **kwargs).train()
    loss = (model(tiny_input(kwargs)) - 50.0).pow(2).mean()
    loss.backward()
    grad = model.conv1[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0

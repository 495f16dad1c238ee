"""Environment files: every shipped one loads; mistakes fail in one line naming file and key."""

from __future__ import annotations

import re

import pytest

from fedsim.config import available_environments, load_env
from fedsim.errors import FedsimError
from fedsim.models import build_model

SHIPPED = [
    "centralized", "skewed-iid", "skewed-noniid", "tiny", "tiny-centralized", "uniform-iid", "uniform-noniid",
    "paper-centralized", "paper-skewed-noniid",
]


def test_every_shipped_environment_loads():
    assert set(SHIPPED) <= set(available_environments())
    for name in available_environments():  # every file in environments/, not only the ones named here
        cfg = load_env(name)
        assert cfg.name == name
        assert (cfg.federation is None) == (cfg.partition.learners == 0)


def test_paper_partition_numbers_are_in_the_files():
    assert load_env("skewed-iid").partition.learner_weights == [2401, 1765, 1303, 964, 714, 528, 391, 290]
    rows = load_env("uniform-noniid").partition.age_bin_weights
    assert [sum(r) for r in rows] == [1045] * 4 + [1044] * 4


@pytest.mark.parametrize("name", ["paper-centralized", "paper-skewed-noniid"])
def test_paper_profiles_build_the_paper_model(name):
    cfg = load_env(name)
    model = build_model(cfg.model.name, **cfg.model_kwargs())
    assert sum(p.numel() for p in model.parameters()) == 2_948_801
    assert cfg.data.shape == [91, 109, 91] and cfg.model.target_scale == 1.0


def test_resolved_config_records_the_cohort_and_model_shape(tmp_path):
    d = load_env("tiny").to_dict(manifest=tmp_path / "m.csv")
    assert d["cohort"]["manifest"] == str((tmp_path / "m.csv").resolve())
    assert d["model"]["in_shape"] == [16, 20, 16]


def _env(tmp_path, text):
    base = (load_env("tiny").path).read_text()
    path = tmp_path / "bad.toml"
    path.write_text(text(base))
    return path


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.replace("lr = 1e-3", "lr = -1"), r"bad.toml: \[train\] lr must be a positive number, got -1"),
        (lambda s: s.replace("lr = 1e-3", "lrr = 1e-3"), r"unknown key 'lrr' in \[train\]; allowed keys: loss, optimizer, lr"),
        (lambda s: s.replace('optimizer = "adam"', 'optimizer = "adamw"'), r"optimizer must be one of 'adam', 'sgd', got 'adamw'"),
        (lambda s: s.replace("shape = [16, 20, 16]\n\n[partition]", "shape = [16, 20]\n\n[partition]"), r"\[data\] shape must be three integers"),
        (lambda s: s.replace("learner_weights = [3, 2, 1]", "learner_weights = [3, 2]"), r"learner_weights has 2 entries but learners = 3"),
        (lambda s: s.split("[federation]")[0], r"needs a \[federation\] table"),
        (lambda s: s.replace("[model]", "[modle]"), r"unknown key or table 'modle'"),
        (lambda s: s + "\n[[oops", r"not valid TOML"),
    ],
)
def test_bad_environment_files(tmp_path, edit, match):
    with pytest.raises(FedsimError, match=match):
        load_env(_env(tmp_path, edit))


def test_unknown_environment_lists_the_shipped_ones():
    shipped = available_environments()
    assert {"centralized", "skewed-noniid", "by-site-attributes", "tiny"} <= set(shipped) and shipped == sorted(shipped)
    with pytest.raises(FedsimError, match=re.escape(f"unknown environment 'skewed'; choose one of: {', '.join(shipped)}")):
        load_env("skewed")

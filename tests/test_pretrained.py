"""``[train] init``: a centralized run and a federation start from a pre-trained model (a run directory's best
epoch, or a snapshot file); weights that do not fit, or a path that names nothing, are one line before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from commands import one_error_line
from federations import TINY, federate
from fedsim import snapshots
from fedsim.cli.centralized import main
from fedsim.config import load_env
from fedsim.defenses.dp_sgd import epsilon
from fedsim.errors import FedsimError
from fedsim.pretrained import init_state

ENVIRONMENTS = TINY.parent


def _with_init(tmp_path: Path, env: str, init: object, **model: object) -> Path:
    """The environment file ``env`` with ``[train] init = init`` (and [model] keys changed)."""
    text = (ENVIRONMENTS / f"{env}.toml").read_text()
    for key, value in model.items():
        text = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line for line in text.splitlines())
    path = tmp_path / f"{env}-init.toml"
    path.write_text(text.replace("[train]\n", f"[train]\ninit = {init!r}\n".replace("'", '"')))
    return path


def test_a_centralized_run_starts_from_a_runs_best_epoch_or_from_a_snapshot(tiny_run, tiny_manifest, tmp_path):
    best = snapshots.read_done(tiny_run)["best_round"]
    for init, expected in ((tiny_run, snapshots.round_dir(tiny_run, best)),
                           (snapshots.round_dir(tiny_run, 1) / snapshots.MODEL_FILE, snapshots.round_dir(tiny_run, 1))):
        out = tmp_path / f"run-{expected.name}"
        env = _with_init(tmp_path, "tiny-centralized", str(init))
        assert main(["--env", str(env), "--cohort", str(tiny_manifest), "--out", str(out), "--epochs", "1"]) == 0
        start, source = (load_file(d / snapshots.MODEL_FILE) for d in (snapshots.round_dir(out, 0), expected))
        assert start.keys() == source.keys() and all(torch.equal(start[k], source[k]) for k in start)
        assert snapshots.read_config(out)["train"]["init"] == str(Path(init).resolve())  # absolute in the run


def test_a_federation_starts_from_the_pre_trained_model(tiny_run, tmp_path):
    env = _with_init(tmp_path, "tiny-learners", str(tiny_run))  # the same model as tiny-centralized
    run = federate(tmp_path / "fed", env=env, rounds=1)
    start = load_file(snapshots.round_dir(run, 0) / snapshots.MODEL_FILE)
    best = load_file(snapshots.round_dir(tiny_run, snapshots.read_done(tiny_run)["best_round"]) / snapshots.MODEL_FILE)
    assert all(torch.equal(start[k], best[k]) for k in best)


@pytest.mark.parametrize("case", ["wider model", "no such path", "not safetensors"])
def test_an_init_that_does_not_fit_is_one_line_before_any_work(case, tiny_run, tiny_manifest, tmp_path, capsys):
    init, model, message = {
        "wider model": (tiny_run, {"channels": "[8, 16]"}, "does not fit this environment's"),
        "no such path": (tmp_path / "nowhere", {}, "no such run directory or .safetensors file"),
        "not safetensors": (tiny_run / "DONE", {}, "not a safetensors file"),
    }[case]
    env = _with_init(tmp_path, "tiny-centralized", str(init), **model)
    out = tmp_path / "out"
    assert message in one_error_line(capsys, main, ["--env", str(env), "--cohort", str(tiny_manifest), "--out", str(out)])
    assert not out.exists()


def test_init_is_a_non_empty_path(tmp_path):
    assert load_env(ENVIRONMENTS / "tiny-centralized.toml").train.init is None  # off unless set
    with pytest.raises(FedsimError, match=r"\[train\] init"):
        load_env(_with_init(tmp_path, "tiny-centralized", " "))


def test_the_shipped_dp_recipe_starts_from_its_public_model_within_its_epsilon(tmp_path, monkeypatch, capsys):
    """centralized-dp fine-tunes the public model of centralized-public-young with noise that spends at most ε 8
    over its epochs (Opacus' steps: epochs × (training subjects // batch)); without that run, the command's one line
    says how to train it."""
    cfg = load_env("centralized-dp")
    assert cfg.train.init == "runs/centralized-public-young"
    assert load_env("centralized-public-young").cohort.seed != cfg.cohort.seed  # public: other subjects
    p = cfg.partition
    subjects = round(cfg.cohort.subjects * (1 - p.unseen_fraction) * (1 - p.val_fraction))
    assert subjects == 540
    steps = cfg.train.epochs * (subjects // cfg.train.batch_size)
    spent = epsilon([(cfg.defense.dp_noise_multiplier, cfg.train.batch_size / subjects, steps)], cfg.defense.dp_delta)
    assert 7.5 < spent <= 8.0, spent
    monkeypatch.chdir(tmp_path)
    line = one_error_line(capsys, main, ["--env", "centralized-dp", "--out", str(tmp_path / "out")])
    assert "train it first: fedsim centralized --env centralized-public-young --out runs/centralized-public-young" in line
    with pytest.raises(FedsimError, match="train it first: fedsim train --env skewed-iid --out skewed-iid$"):
        init_state("skewed-iid")  # a federation's environment: its command is train

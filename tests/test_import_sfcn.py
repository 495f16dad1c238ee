"""``fedsim import --model sfcn``: a checkpoint the reference SFCN code saved (its layer names, ``module.``
prefix) becomes a run whose predictions are the reference network's expected ages on the reference's
preprocessing (the scan divided by its mean, then its centre cropped), and which the attacks read with
SFCN's own loss; output units, a loss or layer names given for it are refused in one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from attacks.experiments.audit import run_audit
from attacks.target import load_snapshot, open_run
from fedsim import snapshots
from fedsim.cli import run_cli
from fedsim.cli.importing import main as import_main
from fedsim.models import layer_parameters
from fedsim.models.sfcn import SFCN
from fedsim.training import model_ages
from tests.helpers.sfcn_reference import ReferenceSFCN, perturb_batch_norms

SHAPE, CROP = (16, 20, 16), (16, 16, 16)  # conftest's cohort; the centre the net takes, as crop_center would
KWARGS = {"in_shape": list(CROP), "channels": [2, 4, 4], "head_channels": 4}  # Peng's bins: 42-82 years by 1
CENTRES = torch.arange(42.5, 82.0, 1.0)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_manifest) -> dict:
    """The reference code's net, saved as it saves: round 0 inside a training checkpoint, round 1 a plain
    DataParallel state dict in its own ``.p`` file."""
    out = tmp_path_factory.mktemp("peng")
    torch.manual_seed(0)
    initial = ReferenceSFCN(channel_number=(2, 4, 4, 4), output_dim=40, avg_shape=(2, 2, 2))
    trained = copy.deepcopy(initial)
    perturb_batch_norms(trained)
    with torch.no_grad():  # a sharper head: a z-scored instead of a mean-divided scan moves its age by tenths of a year
        trained.classifier[-1].weight.mul_(30.0)
    as_saved = {f"module.{k}": v for k, v in initial.state_dict().items()}  # DataParallel's names
    torch.save({"epoch": 0, "state_dict": as_saved}, out / "epoch0.pt")
    torch.save({f"module.{k}": v for k, v in trained.state_dict().items()}, out / "best_mae.p")
    table = pd.read_csv(tiny_manifest)
    groups = np.where(np.arange(len(table)) % 2 == 0, "train", "unseen")
    pd.DataFrame({"subject_id": table["subject_id"], "group": groups}).to_csv(out / "membership.csv", index=False)
    return {"dir": out, "net": trained.eval(), "membership": out / "membership.csv", "manifest": tiny_manifest}


def _argv(reference: dict, out: Path, model: str = "sfcn") -> list[str]:
    d = reference["dir"]
    return ["--model", model, "--model-kwargs", json.dumps(KWARGS), "--checkpoint", f"0={d / 'epoch0.pt'}",
            "--checkpoint", f"1={d / 'best_mae.p'}", "--cohort", str(reference["manifest"]), "--membership",
            str(reference["membership"]), "--shape", *map(str, SHAPE), "--crop", *map(str, CROP), "--intensity", "mean",
            "--out", str(out)]


def test_a_reference_checkpoint_imports_predicts_its_ages_and_is_attacked(reference, tmp_path):
    run = tmp_path / "run"
    assert import_main(_argv(reference, run)) == 0
    config = snapshots.read_config(run)
    assert config["model"]["factory"] == "sfcn" and config["model"]["crop"] == list(CROP)
    assert config["model"]["layers"] == {"conv1": "conv1", "conv6": "conv6", "output": "output"}
    assert config["train"]["loss"] == "kl"  # as fedsim's own SFCN runs record it
    assert all(c["names"].startswith("reference SFCN") for c in config["import"]["checkpoints"])
    snapshot = load_snapshot(run, 1)
    assert isinstance(snapshot.model, SFCN)
    assert list(layer_parameters(snapshot.model)) == ["conv1", "conv2", "conv3", "conv6", "output"]  # SFCN's own

    # The reference pipeline by hand: the raw scan / its mean, its centre, the expected bin of the reference net
    table = pd.read_csv(reference["manifest"])
    raw = np.stack([np.asarray(nib.load(reference["manifest"].parent / p).dataobj, dtype=np.float32)
                    for p in table["path"][:4]])
    assert raw.min() == 0  # background 0: what 'mean' assumes of a scan
    x = raw / raw.reshape(4, -1).mean(axis=1)[:, None, None, None]
    x = torch.from_numpy(x[:, 0:16, 2:18, 0:16].copy())[:, None]
    with torch.no_grad():
        expected = reference["net"](x).reshape(4, -1).exp() @ CENTRES
        volumes = torch.from_numpy(np.array(open_run(run).cohort.volumes[:4]))[:, None]  # fedsim's z-scored cache
        predicted = model_ages(snapshot.model, snapshot.model(volumes))
    torch.testing.assert_close(predicted, expected, atol=1e-4, rtol=0)

    result = run_audit(run, families="membership", budget="quick")
    assert "grad_norm" in set(result.membership["features"])  # gradients of SFCN's own KL loss
    assert result.membership["auc"].between(0, 1).all()


@pytest.mark.parametrize("extra, match", [
    (("--output-scale", "7.4"), "fedsim.models.sfcn:SFCN reads its ages off its own output (SFCN.output_ages), so it "
                                "takes no output units: drop --output-scale/--output-offset (got 7.4 and 0)"),
    (("--loss", "l1"), "fedsim.models.sfcn:SFCN trains with its own loss (SFCN.output_loss), which the attacks "
                       "differentiate: drop --loss (got 'l1')"),
    (("--layers", "conv6=conv2"), "fedsim.models.sfcn:SFCN is one of fedsim's models and keeps its own layers (conv1, "
                                  "conv2, conv3, conv6, drop, output); drop --layers (got conv6=conv2)"),
    (("--crop", "30", "2", "2"), "crop (30, 2, 2) does not fit in the declared shape (16, 20, 16): the model takes the "
                                 "centre of each scan at that shape"),
])
def test_what_does_not_apply_to_sfcn_is_refused_in_one_line(reference, tmp_path, capsys, extra, match):
    assert run_cli(import_main, _argv(reference, tmp_path / "run", "fedsim.models.sfcn:SFCN") + list(extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {match}" and not (tmp_path / "run").exists()

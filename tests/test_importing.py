"""``fedsim import``: a model class defined only here (never registered), trained outside fedsim for a few
steps, imported from plain state-dict files, then attacked by every family; bad checkpoints, layer names,
membership tables and output units are one-line errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from attacks.experiments.audit import BUDGETS, Budget, run_audit
from attacks.target import has_local_models, load_snapshot, open_run
from fedsim import snapshots
from fedsim.cli import run_cli
from fedsim.cli.importing import main as import_main
from fedsim.errors import FedsimError
from fedsim.importing import ModelSpec, import_run, read_membership
from fedsim.models import MODELS, layer_parameters
from fedsim.models.imported import ImportedModel

SHAPE = (16, 20, 16)  # conftest's tiny cohort
MEAN, STD = 62.7, 7.4  # this "user" z-scores the ages it trains on


class TinyAgeNet(nn.Module):
    """The user's own regressor: fedsim has never heard of it."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                                      nn.Conv3d(width, 2 * width, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.hidden = nn.Linear(2 * width, 16)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(self.features(x))))


FACTORY = f"{__name__}:TinyAgeNet"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_manifest) -> dict[str, Path]:
    """Half the cohort trained on, outside fedsim: its own loading (nibabel, z-score), its own loop (Adam on the
    z-scored age); checkpoints as torch.save(state_dict) files and one safetensors file, and the membership table."""
    out = tmp_path_factory.mktemp("user")
    table = pd.read_csv(tiny_manifest)
    scans = [np.asarray(nib.load(tiny_manifest.parent / p).dataobj, dtype=np.float32) for p in table["path"]]
    x = torch.from_numpy(np.stack([(s - s.mean()) / s.std() for s in scans]))[:, None]
    y = (torch.tensor(table["age"].to_numpy(), dtype=torch.float32) - MEAN) / STD
    members = np.arange(len(table)) % 2 == 0
    torch.manual_seed(0)
    model = TinyAgeNet()
    torch.save(model.state_dict(), out / "epoch0.pt")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(1, 41):
        optimizer.zero_grad()
        ((model(x[members]).squeeze(1) - y[members]) ** 2).mean().backward()
        optimizer.step()
        if step == 20:
            torch.save({"epoch": 20, "model_state_dict": model.state_dict()}, out / "epoch20.pt")  # a training checkpoint
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "epoch40.safetensors")
    torch.save(model, out / "whole-model.pt")  # the pickled module: what must be refused
    pd.DataFrame({"subject_id": table["subject_id"], "group": np.where(members, "train", "unseen")}).to_csv(
        out / "membership.csv", index=False)
    return {"dir": out, "membership": out / "membership.csv", "manifest": tiny_manifest}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, trained) -> Path:
    out = tmp_path_factory.mktemp("imported") / "run"
    d = trained["dir"]
    code = import_main(["--model", FACTORY, "--checkpoint", f"0={d / 'epoch0.pt'}", "--checkpoint", f"20={d / 'epoch20.pt'}",
                        "--checkpoint", f"40={d / 'epoch40.safetensors'}", "--cohort", str(trained["manifest"]),
                        "--membership", str(trained["membership"]), "--shape", *map(str, SHAPE),
                        "--output-scale", str(STD), "--output-offset", str(MEAN), "--out", str(out)])
    assert code == 0
    return out


def test_the_run_directory_rebuilds_the_users_own_module_from_its_files(imported, trained):
    assert "TinyAgeNet" not in {getattr(m, "__name__", "") for m in MODELS.values()}  # never registered
    assert snapshots.complete_rounds(imported) == [0, 20, 40] and snapshots.is_done(imported)
    config = snapshots.read_config(imported)
    assert config["model"]["factory"] == FACTORY and config["data"]["shape"] == list(SHAPE)
    assert config["model"]["layers"] == {"conv1": "features.0", "conv6": "hidden", "output": "head"}  # found
    assert config["model"]["intensity"] == "zscore" and config["model"]["target_scale"] == STD
    assert [c["round"] for c in config["import"]["checkpoints"]] == [0, 20, 40]
    model = snapshots.load_model(snapshots.round_dir(imported, 40) / snapshots.MODEL_FILE)  # from its header alone
    assert isinstance(model, TinyAgeNet) and isinstance(model, ImportedModel)
    assert list(model.state_dict()) == list(TinyAgeNet().state_dict())  # the user's own parameter names
    assert list(layer_parameters(model)) == ["conv1", "features.3", "conv6", "output"]
    user = TinyAgeNet()
    user.load_state_dict(torch.load(trained["dir"] / "epoch20.pt", weights_only=True)["model_state_dict"])
    snapshot = load_snapshot(imported, 20)
    x = torch.from_numpy(np.array(open_run(imported).cohort.volumes[:3]))[:, None]
    with torch.no_grad():  # years = offset + scale * the user's output
        assert torch.allclose(snapshot.model(x), MEAN + STD * user.eval()(x).squeeze(1), atol=1e-4)
    done = snapshots.read_done(imported)
    assert done["final_round"] == 40 and done["members_mae"] < done["predict_mean_mae"] + 2


def test_membership_attribute_and_reconstruction_attack_the_imported_model(imported):
    budget = Budget("tiny", features="error,pred+label,grad:conv6", repeats=1, references=0, classifier="logreg",
                    scans=1, layers=("conv1",), why_not=BUDGETS["quick"].why_not)
    result = run_audit(imported, budget=budget)
    membership = result.membership
    assert set(membership["features"]) == {"error", "pred+label", "grad:conv6"}
    assert set(membership["control"]) == {"none", "round-0", "age-matched"} and membership["auc"].between(0, 1).all()
    attribute = result.attribute
    assert set(attribute["attribute"]) == {"sex"} and {"outsider", "feature holder"} <= set(attribute["seat"])
    assert {"activation:conv1", "activation:conv6", "grad:output"} <= set(attribute["features"])
    (inversion, *_) = [r for r in result.reconstruction if r["method"] == "white-box"]
    assert inversion["layer"] == "conv1" and inversion["round"] == 40 and 0 <= inversion["identified"] <= 1


def _one_line_error(argv: list[str], capsys) -> str:
    assert run_cli(import_main, argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def _argv(trained, out: Path, *checkpoints: str, extra: tuple[str, ...] = (), units: bool = True) -> list[str]:
    argv = ["--model", FACTORY, "--cohort", str(trained["manifest"]), "--membership", str(trained["membership"]),
            "--shape", *map(str, SHAPE), "--out", str(out)]
    argv += ["--output-scale", str(STD), "--output-offset", str(MEAN)] if units else []
    return argv + [a for c in checkpoints for a in ("--checkpoint", c)] + list(extra)


def test_a_pickled_object_is_refused_in_one_line_and_never_unpickled(trained, tmp_path, capsys):
    err = _one_line_error(_argv(trained, tmp_path / "run", str(trained["dir"] / "whole-model.pt")), capsys)
    assert err.startswith("error: checkpoint ") and f"pickled {FACTORY.replace(':', '.')} object" in err
    assert "weights_only=True" in err and "state_dict()" in err
    assert not (tmp_path / "run").exists()  # a refused import leaves nothing behind


def test_a_wrong_layer_name_lists_the_models_layers(trained, tmp_path, capsys):
    checkpoint = str(trained["dir"] / "epoch40.safetensors")
    err = _one_line_error(_argv(trained, tmp_path / "run", checkpoint, extra=("--layers", "conv6=fc1")), capsys)
    assert err == (f"error: {FACTORY} has no layer 'fc1' (conv6); its layers with weights: "
                   "features.0, features.3, hidden, head")
    err = _one_line_error(_argv(trained, tmp_path / "run", checkpoint, extra=("--layers", "conv7=hidden")), capsys)
    assert "layer role 'conv7' is not one of conv1, conv6, output" in err


def test_the_declared_output_units_are_checked_on_the_first_scan(trained, tmp_path, capsys):
    # the model regresses z-scored ages: declared as years, its first scan is a fraction of a year old
    err = _one_line_error(_argv(trained, tmp_path / "run", str(trained["dir"] / "epoch40.safetensors"), units=False), capsys)
    assert "predicts" in err and "years for subject" in err and "output_scale" in err


def test_a_federation_imports_its_learners_local_models(trained, tmp_path):
    table = pd.read_csv(trained["membership"], dtype=str)
    table["group"] = np.where(table["group"] == "train", np.where(np.arange(len(table)) % 4 == 0, "L1", "L2"), "unseen")
    d = trained["dir"]
    run = import_run(tmp_path / "fl", model=ModelSpec(FACTORY, SHAPE, output_scale=STD, output_offset=MEAN),
                     checkpoints=[d / "epoch40.safetensors"], cohort=trained["manifest"], membership=table,
                     local={(1, "L1"): d / "epoch20.pt", (1, "L2"): d / "epoch40.safetensors"})
    target = open_run(run)
    assert target.rounds == [0, 1] and has_local_models(target, 1)
    assert snapshots.read_config(run)["federation"] == {"rounds": 1, "snapshot_local": True}
    with pytest.raises(FedsimError, match=r"local model .* is of L3, but the membership table's learners are L1, L2"):
        import_run(tmp_path / "bad", model=ModelSpec(FACTORY, SHAPE), checkpoints=[d / "epoch0.pt"],
                   cohort=trained["manifest"], membership=table, local={(1, "L3"): d / "epoch0.pt"})


@pytest.mark.parametrize("rows, match", [
    ([("a", "train"), ("b", "L1"), ("c", "unseen")], r"mixes 'train' \(one model\) with learners \(L1\)"),
    ([("a", "train"), ("b", "train")], r"has no 'unseen' subject"),
    ([("a", "L1"), ("b", "L3"), ("c", "unseen")], r"learners must be L1…L2 without gaps, got L1, L3"),
    ([("a", "train"), ("a", "unseen")], r"subject 'a' appears more than once"),
    ([("a", "member"), ("b", "unseen")], r"line 2 \(subject 'a'\): group 'member' is not one of train, val, unseen"),
])
def test_membership_tables_are_checked_row_by_row(rows, match):
    with pytest.raises(FedsimError, match=match):
        read_membership(pd.DataFrame(rows, columns=["subject_id", "group"]))

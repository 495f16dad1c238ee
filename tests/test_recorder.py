"""A Flower app that is not fedsim's (``examples/flower_app``: its own model, data and FedAvg) wrapped in
:class:`fedsim.federation.recorder.RecordingStrategy`: run in Flower's simulation, recorded into a run
directory, and audited from every seat; a reply that names no learner, or weights that do not fit the
declared model, are one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from safetensors.torch import load_file

import attacks
from attacks.target import has_local_models, load_snapshot, open_run
from fedsim import snapshots
from fedsim.config import load_env
from fedsim.data.prepare import resolve_manifest
from fedsim.errors import FedsimError
from fedsim.federation.local_grid import run_local
from fedsim.federation.recorder import RecordingStrategy
from fedsim.importing import ModelSpec

from federations import ENVIRONMENTS

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower_app"


@pytest.fixture(scope="module")
def manifest() -> Path:
    """tiny-learners' synthetic cohort (96 subjects at 16x20x16), shared with the other federation tests."""
    return resolve_manifest(load_env(ENVIRONMENTS / "tiny-learners.toml"), None)[0]


@pytest.fixture(scope="module")
def app():
    """The example app's modules, imported as its own package (``brainage_app``) from its folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLE))
        from brainage_app import client_app, server_app, task
    return client_app, server_app, task


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, manifest, app) -> Path:
    """Two learners, two rounds of the example app, in process (Flower's ServerApp and ClientApp on fedsim's LocalGrid)."""
    client_app, server_app, _ = app
    run_dir = tmp_path_factory.mktemp("recorded") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BRAINAGE_MANIFEST", str(manifest))
        mp.setenv("BRAINAGE_RUN_DIR", str(run_dir))
        run_local(server_app.app, client_app.app, 2, {})
    return run_dir


def test_every_round_and_every_learners_model_is_recorded_as_flower_made_it(recorded, app, manifest):
    *_, task = app
    assert snapshots.complete_rounds(recorded) == [0, 1, 2] and snapshots.is_done(recorded)
    config = snapshots.read_config(recorded)
    assert config["model"]["factory"] == "brainage_app.task:AgeNet" and config["federation"]["rounds"] == 2
    assert config["model"]["layers"] == {"conv1": "features.0", "conv6": "hidden", "output": "head"}
    partitions = pd.read_csv(recorded / snapshots.PARTITIONS_FILE)
    assert set(partitions["group"]) == {"L1", "L2", "unseen"}
    torch.manual_seed(0)  # the ServerApp's initial model is round 0
    initial = task.AgeNet().state_dict()
    assert all(torch.equal(initial[k], v) for k, v in load_file(snapshots.round_dir(recorded, 0) / "model.safetensors").items())
    counts = partitions["group"].value_counts()
    for rnd in (1, 2):  # the community model is FedAvg of the learners' recorded models, by their subjects
        d = snapshots.round_dir(recorded, rnd)
        local = {g: load_file(d / f"{g}.safetensors") for g in ("L1", "L2")}
        community = load_file(d / snapshots.MODEL_FILE)
        for key, value in community.items():
            mean = sum(counts[g] * local[g][key] for g in local) / (counts["L1"] + counts["L2"])
            assert torch.allclose(value, mean, atol=1e-6), key
    assert set(pd.DataFrame(snapshots.read_metrics(recorded))["round"]) == {0, 1, 2}


def test_the_recorded_federation_is_audited_from_every_seat(recorded):
    target = open_run(recorded)
    assert has_local_models(target, 2) and isinstance(load_snapshot(recorded, 2, name="L1").model, torch.nn.Module)
    results = attacks.audit(recorded, features="error,pred+label,grad:conv6", repeats=1, classifier="logreg")
    assert set(results["seat"]) == {"malicious learner", "outsider", "curious controller"}
    assert {"none", "round-0", "age-matched"} <= set(results["control"]) and results["auc"].between(0, 1).all()
    assert set(results.loc[results["seat"] == "outsider", "features"]) == {"error", "pred+label"}


def _server(run_dir: Path, manifest: Path, task, spec: ModelSpec) -> ServerApp:
    """A one-round app like the example's, with the model declared as ``spec``."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = RecordingStrategy(FedAvg(fraction_evaluate=0.0, min_available_nodes=2), run_dir, model=spec,
                                     cohort=manifest, membership=task.groups(manifest, 2), local_models=True)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(task.AgeNet().state_dict()), num_rounds=1,
                       train_config=ConfigRecord({"epochs": 1, "lr": 0.01}))

    return server


def test_replies_that_name_no_learner_and_weights_that_do_not_fit_are_one_line_errors(tmp_path, manifest, app,
                                                                                     monkeypatch):
    client_app, _, task = app
    monkeypatch.setenv("BRAINAGE_MANIFEST", str(manifest))
    spec = ModelSpec("brainage_app.task:AgeNet", (16, 20, 16), output_scale=task.AGE_STD, output_offset=task.AGE_MEAN)
    untagged = ClientApp()  # the example's learner without fedsim's mod
    untagged.train()(client_app.learn)
    with pytest.raises(FedsimError, match=r"a learner's reply does not say which learner sent it .*partition_id_mod"):
        run_local(_server(tmp_path / "a", manifest, task, spec), untagged, 2, {})
    wider = ModelSpec(spec.factory, spec.shape, {"width": 8}, output_scale=task.AGE_STD, output_offset=task.AGE_MEAN)
    with pytest.raises(FedsimError, match=r"the model the ServerApp sent in round 1 does not fit brainage_app.task:AgeNet "
                       r"built with its declared arguments: features.0.weight is \(4, 1, 3, 3, 3\) there but \(8, 1, 3, 3, 3\)"):
        run_local(_server(tmp_path / "b", manifest, task, wider), client_app.app, 2, {})


@pytest.mark.slow
def test_the_example_runs_in_flowers_ray_simulation_and_records_every_round(tmp_path, manifest, app):
    """The example's own driver (``simulate.py``: ``flwr.simulation.run_simulation``, Ray), as a user runs it; the
    attacks import the app's model class (``app``: its package importable here, as on the user's PYTHONPATH)."""
    run_dir = tmp_path / "ray-run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_ADDRESS": "local"}
    result = subprocess.run([sys.executable, str(EXAMPLE / "simulate.py"), str(manifest), str(run_dir)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    # what the in-process run has, which the tests above audit from every seat
    assert snapshots.complete_rounds(run_dir) == [0, 1, 2] and snapshots.is_done(run_dir)
    assert has_local_models(open_run(run_dir), 2)


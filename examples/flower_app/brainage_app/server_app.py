"""The controller: Flower's FedAvg, wrapped by fedsim's recorder so the federation can be audited."""

from __future__ import annotations

import os

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from brainage_app.task import AGE_MEAN, AGE_STD, AgeNet, groups, scan_shape
from fedsim.federation.recorder import RecordingStrategy
from fedsim.importing import ModelSpec

EPOCHS, LR = 20, 0.01  # each learner's local training per round
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config  # flwr run's [tool.flwr.app.config]; run_simulation leaves it empty
    manifest = config.get("manifest") or os.environ["BRAINAGE_MANIFEST"]
    run_dir = config.get("run-dir") or os.environ["BRAINAGE_RUN_DIR"]
    partitions = int(config.get("num-partitions", 2))
    strategy = RecordingStrategy(
        FedAvg(fraction_evaluate=0.0, min_available_nodes=partitions),
        run_dir,
        model=ModelSpec("brainage_app.task:AgeNet", shape=scan_shape(manifest), output_scale=AGE_STD,
                        output_offset=AGE_MEAN),
        cohort=manifest,
        membership=groups(manifest, partitions),
        local_models=True,
    )
    torch.manual_seed(0)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(AgeNet().state_dict()),
                   num_rounds=int(config.get("num-server-rounds", 2)),
                   train_config=ConfigRecord({"epochs": EPOCHS, "lr": LR}))

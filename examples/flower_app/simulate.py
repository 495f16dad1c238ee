"""Run the app in Flower's simulation: ``python simulate.py MANIFEST RUN_DIR`` (two learners, two rounds)."""

from __future__ import annotations

import os
import sys

from flwr.simulation import run_simulation

if __name__ == "__main__":
    manifest, run_dir = (os.path.abspath(a) for a in sys.argv[1:3])
    os.environ.update(BRAINAGE_MANIFEST=manifest, BRAINAGE_RUN_DIR=run_dir, FLWR_TELEMETRY_ENABLED="0")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join([sys.path[0], os.environ.get("PYTHONPATH", "")])  # for Ray's actors
    from brainage_app.client_app import app as client_app
    from brainage_app.server_app import app as server_app

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=2,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})

"""Federated training with Flower's Message API: a FedAvg controller (``server_app``), learners
(``client_app``) and the Ray simulation launcher (``simulation``), all meeting in a run directory."""

import os

# Flower reads this once, at import: a simulation of private (if synthetic) data never phones home,
# and on a machine without network the telemetry attempts only cost time.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

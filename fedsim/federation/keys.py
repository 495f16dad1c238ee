"""Every name the federation's pieces share, in one place: record keys (kebab-case, as Flower's
own ``num-examples``), run-config keys and environment variables."""

from __future__ import annotations

# Records of a train message and its reply.
ARRAYS = "arrays"  # ArrayRecord: the model (FedAvg's default arrayrecord_key)
CONFIG = "config"  # ConfigRecord server → learner (FedAvg's default configrecord_key)
METRICS = "metrics"  # MetricRecord learner → server; FedAvg averages every key in it
INFO = "info"  # ConfigRecord learner → server: facts that must not be averaged

# Keys inside those records.
NUM_EXAMPLES = "num-examples"  # FedAvg's weighting key: the learner's sample count
TRAIN_MAE = "train-mae"
UNSEEN_MAE = "unseen-mae"  # the controller's own evaluation of the community model
SERVER_ROUND = "server-round"  # injected by FedAvg.configure_train; absolute round in fedsim
RUN_DIR = "run-dir"  # also the [tool.flwr.app.config] key under `flwr run`
DEVICE = "device"
NUM_THREADS = "num-threads"
LEARNER = "learner"  # "L3"; node ids are random, so the learner names itself
EPSILON = "epsilon"  # DP-SGD: ε this learner has spent up to this round (in INFO: never averaged)
ATTACK = "attack"  # [attack] active: what the malicious learner simulated this round (in INFO)
NORMAL_NORM = "normal-norm"  # its normal update's L2 norm, before the ascent
ASCENT_NORM = "ascent-norm"  # the ascent's L2 norm added to it

# [tool.flwr.app.config] / context.run_config
NUM_SERVER_ROUNDS = "num-server-rounds"

# Environment variables.
ENV_RUN_DIR = "FEDSIM_RUN_DIR"  # run_simulation leaves context.run_config empty; the launcher sets this
ENV_FAIL_LEARNER = "FEDSIM_FAIL_LEARNER"  # fault injection for tests: "L2" (every round) or "L2@3" (round 3)

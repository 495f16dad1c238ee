"""The learner: a Flower ``ClientApp`` that trains the community model on its own subjects.

Partition id ``i`` (injected by the simulation as ``node_config["partition-id"]``) is learner
``L{i+1}`` of ``partitions.csv``. Everything else comes from the run directory named in the
train message, so the same app runs under ``run_simulation``, ``flwr run`` and a Ray cluster.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedsim.data.cache import VolumeDataset
from fedsim.data.partition import learner_label
from fedsim.defenses import local_training, release_weights
from fedsim.defenses.central_dp import clip_update
from fedsim.defenses.dp_sgd import PrivacyLedger
from fedsim.federation import keys
from fedsim.federation.malicious import SIMULATED, ascend, attacking, read_attack_record
from fedsim.federation.run_setup import RunSetup, learner_seed
from fedsim.models import build_model
from fedsim.training import train_epochs

# Flower's code for "the ClientApp raised" (flwr.common.constant.ErrorCode, not public API).
CLIENT_APP_RAISED_EXCEPTION = 2

# Ray reuses one actor for many learners, so data is cached per (run dir, learner).
_SETUPS: dict[str, RunSetup] = {}
_DATASETS: dict[tuple[str, str], VolumeDataset] = {}


def _learner(context: Context) -> str:
    return learner_label(int(context.node_config["partition-id"]) + 1)


def _dataset(run_dir: str, learner: str) -> tuple[RunSetup, VolumeDataset]:
    if run_dir not in _SETUPS:
        _SETUPS[run_dir] = RunSetup.load(run_dir)
    if (run_dir, learner) not in _DATASETS:
        _DATASETS[run_dir, learner] = _SETUPS[run_dir].dataset(learner)
    return _SETUPS[run_dir], _DATASETS[run_dir, learner]


def _injected_failure(learner: str, rnd: int) -> None:
    """Test/fault-injection hook: ``FEDSIM_FAIL_LEARNER="L2"`` makes L2 raise in every round,
    ``"L2@3"`` only in round 3 (comma-separated for several). Never set it in real runs."""
    for item in filter(None, os.environ.get(keys.ENV_FAIL_LEARNER, "").split(",")):
        who, _, when = item.strip().partition("@")
        if who == learner and (not when or int(when) == rnd):
            raise RuntimeError(f"injected failure ({keys.ENV_FAIL_LEARNER}={item.strip()})")


def report_failures(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Mod: turn a learner's exception into an error reply that names the learner.

    Failures are data: the controller sees ``"L2: RuntimeError: …"`` instead of an anonymous
    node id, decides by ``[federation] max_failures`` and the actor survives for other learners.
    """
    try:
        return call_next(msg, context)
    except Exception as err:  # noqa: BLE001 - any learner failure is reported, never raised
        reason = f"{_learner(context)}: {type(err).__name__}: {err}"
        return Message(Error(code=CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


def perturb_update(msg: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """Mod: model perturbation, ``N(0, model_noise²)`` on every weight this learner sends
    (``[defense] model_noise``; a pass-through when it is 0). It runs after any clipping, so
    the noise is what leaves the learner."""
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    config = msg.content[keys.CONFIG]
    setup, _ = _dataset(str(config[keys.RUN_DIR]), _learner(context))
    d = setup.cfg.defense
    if d is None or d.model_noise == 0:
        return reply
    rnd, k = int(config[keys.SERVER_ROUND]), int(context.node_config["partition-id"]) + 1
    state = release_weights(setup.cfg, reply.content[keys.ARRAYS].to_torch_state_dict(), rnd, k)
    reply.content[keys.ARRAYS] = ArrayRecord(state)
    return reply


app = ClientApp()


# Outermost first: failures become replies; noise goes on the (clipped) update last.
@app.train(mods=[report_failures, perturb_update, clip_update])
def train(msg: Message, context: Context) -> Message:
    """Load the community model, train ``local_epochs`` on this learner's subjects, reply.

    The environment's defenses wrap the pieces (:func:`fedsim.defenses.local_training`); with
    DP-SGD the learner's accountant history comes from, and goes back to, the run directory.
    """
    learner = _learner(context)
    config = msg.content[keys.CONFIG]
    rnd = int(config[keys.SERVER_ROUND])
    _injected_failure(learner, rnd)
    setup, dataset = _dataset(str(config[keys.RUN_DIR]), learner)
    cfg = setup.cfg
    threads = int(config.get(keys.NUM_THREADS, 0))
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    device = torch.device(str(config.get(keys.DEVICE, "cpu")))

    seed = learner_seed(cfg.seed, rnd, learner)
    torch.manual_seed(seed)
    model = build_model(cfg.model.name, **cfg.model_kwargs())
    received = msg.content[keys.ARRAYS].to_torch_state_dict()
    model.load_state_dict(received)
    model.to(device)
    ledger = PrivacyLedger(setup.run_dir, learner) if cfg.defense and cfg.defense.dp_sgd else None
    session = local_training(cfg, model, dataset, seed=seed, prior=tuple(ledger.before(rnd)) if ledger else ())
    mae = train_epochs(
        session.model,
        session.loader,
        session.optimizer,  # fresh every round: learners keep no optimizer state
        loss=cfg.train.loss,
        target_scale=cfg.model.target_scale,
        epochs=cfg.federation.local_epochs,
        device=device,
        precision=cfg.train.precision,
    )
    info = {keys.LEARNER: learner}
    if attacking(cfg, learner, rnd):  # [attack] active: a simulation, recorded as one in attack.json
        targets = setup.dataset_of(read_attack_record(setup.run_dir)["targets"])
        info[keys.ATTACK] = SIMULATED
        info.update(ascend(model, {k: v.to(device) for k, v in received.items()}, targets, dataset,
                           attack=cfg.attack, batch_size=cfg.train.batch_size, loss=cfg.train.loss,
                           target_scale=cfg.model.target_scale, device=device))
    if ledger is not None:
        info[keys.EPSILON] = eps = session.epsilon(cfg.defense.dp_delta)
        ledger.record(rnd, session.private.steps(), eps, cfg.defense.dp_delta)
    return Message(
        RecordDict({
            keys.ARRAYS: ArrayRecord(model.cpu().state_dict()),
            keys.METRICS: MetricRecord({keys.TRAIN_MAE: mae, keys.NUM_EXAMPLES: len(dataset)}),
            keys.INFO: ConfigRecord(info),
        }),
        reply_to=msg,
    )

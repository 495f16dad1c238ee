"""The federation controller: a Flower ``ServerApp`` running FedAvg and snapshotting every round.

The round loop is Flower's (``Strategy.start``); fedsim adds two things through its hooks:
:class:`~fedsim.federation.strategy.SnapshotFedAvg` (absolute rounds, failures, local models)
and :class:`RoundRecorder`, the ``evaluate_fn`` that Flower calls with the initial model (round
0) and after every round — it scores the community model on the unseen subjects and writes it
to the run directory. A run directory that already holds rounds is continued, not restarted.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedsim import snapshots
from fedsim.defenses import privacy_summary
from fedsim.defenses.central_dp import wrap_strategy
from fedsim.federation import keys
from fedsim.federation.run_setup import RunSetup, resolve_run_dir
from fedsim.federation.strategy import SnapshotFedAvg
from fedsim.device import resolve_device
from fedsim.models import build_model
from fedsim.plots import plot_learning_curve
from fedsim.pretrained import initial_model
from fedsim.progress import listening, report_round
from fedsim.training import evaluate, make_loader


class RoundRecorder:
    """``evaluate_fn`` of the strategy: unseen MAE, snapshot, ``metrics.jsonl`` line, round report.

    The metrics line is appended before the snapshot, whose ``meta.json`` marks the round
    complete; a crash in between leaves a line that a resume drops (:func:`_forget_after`).
    """

    def __init__(self, setup: RunSetup, strategy: SnapshotFedAvg, rounds: int, *, resumed: bool) -> None:
        cfg = setup.cfg
        self.setup, self.strategy, self.rounds, self.resumed = setup, strategy, rounds, resumed
        self.device = resolve_device()  # the controller scores on a GPU when it has one
        self.model = build_model(cfg.model.name, **cfg.model_kwargs()).to(self.device)
        self.unseen = make_loader(setup.dataset("unseen"), max(cfg.train.batch_size, 16), shuffle=False,
                                  device=self.device)
        self.counts = setup.sample_counts()
        self.started = time.perf_counter()

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        rnd = server_round + self.strategy.done_rounds
        if server_round == 0 and self.resumed:
            return None  # resumed (even from round 0 alone): this model is the last snapshot on disk already
        state = arrays.to_torch_state_dict()
        self.model.load_state_dict(state)
        unseen = evaluate(self.model, self.unseen, self.device)
        report = self.strategy.reports.get(rnd, {"learners": {}, "failed": {}})
        seconds = 0.0 if server_round == 0 else time.perf_counter() - self.started
        metrics = {"round": rnd, "seconds": round(seconds, 2), **unseen.as_dict("unseen")}
        metrics.update({f"{k}_train_mae": v["train_mae"] for k, v in report["learners"].items()})
        metrics.update({f"{k}_epsilon": v["epsilon"] for k, v in report["learners"].items() if "epsilon" in v})
        for key in ("update_norm", "ascent_norm"):  # every update's norm; the simulated attacker's ascent
            metrics.update({f"{k}_{key}": v[key] for k, v in report["learners"].items() if key in v})
        metrics.update(report.get("privacy", {}))  # central DP: effective noise multiplier and ε
        if report["failed"]:
            metrics["failed"] = sorted(report["failed"])
        run_dir = self.setup.run_dir
        snapshots.append_metrics(run_dir, metrics)
        meta = {"env": self.setup.cfg.name, "sample_counts": self.counts, "metrics": metrics, **report}
        snapshots.save_round(run_dir, rnd, state, meta, architecture=self.strategy.architecture)
        self._progress(rnd, metrics, report)
        self.started = time.perf_counter()
        return MetricRecord({keys.UNSEEN_MAE: unseen.mae})

    def _progress(self, rnd: int, metrics: dict, report: dict) -> None:
        line = f"round {rnd:3d}/{self.rounds}  community unseen MAE {metrics['unseen_mae']:5.2f}"
        train = [v["train_mae"] for v in report["learners"].values()]
        if train:
            line += f"  learners' train MAE {min(train):.1f}–{max(train):.1f}"
        eps = [v["epsilon"] for v in report["learners"].values() if "epsilon" in v]
        if eps:
            line += f"  DP-SGD ε {min(eps):.2f}–{max(eps):.2f}"
        if "central_epsilon" in metrics:
            line += f"  central ε {metrics['central_epsilon']:.2f}"
        if report["failed"]:
            line += f"  failed: {', '.join(sorted(report['failed']))}"
        report_round(line + f"  {metrics['seconds']:.1f}s", metrics)


def _forget_after(run_dir: Path, last: int) -> None:
    """Drop metric lines of rounds after ``last`` (an interrupted round is replayed on resume)."""
    lines = [m for m in snapshots.read_metrics(run_dir) if m["round"] <= last]
    snapshots.write_text(run_dir / snapshots.METRICS_FILE, "".join(json.dumps(m) + "\n" for m in lines))


def initial_arrays(setup: RunSetup, last: int | None) -> ArrayRecord:
    """The last complete round's community model, or a fresh one seeded by the environment (with the weights of
    ``[train] init`` where it names a pre-trained model)."""
    if last is not None:
        state, _ = snapshots.load_round(setup.run_dir, last)
        return ArrayRecord(state)
    torch.manual_seed(setup.cfg.seed)
    return ArrayRecord(initial_model(setup.cfg).state_dict())


def summarize(setup: RunSetup) -> dict:
    """Errors of the final community model on every learner's own subjects and on the unseen set.

    The unseen set is drawn stratified by age bin from the whole cohort, so the pooled members
    are age-matched to it: ``memorisation_gap`` = unseen MAE − members' MAE is what the
    membership-inference attacks feed on.
    """
    cfg = setup.cfg
    last = snapshots.complete_rounds(setup.run_dir)[-1]
    state, _ = snapshots.load_round(setup.run_dir, last)
    device = resolve_device()
    model = build_model(cfg.model.name, **cfg.model_kwargs()).to(device)
    model.load_state_dict(state)
    per_group = {}
    for group in [*setup.learners, "unseen"]:
        loader = make_loader(setup.dataset(group), max(cfg.train.batch_size, 16), shuffle=False, device=device)
        per_group[group] = evaluate(model, loader, device)
    n = sum(per_group[g].n for g in setup.learners)
    members = sum(per_group[g].mae * per_group[g].n for g in setup.learners) / n
    ages = setup.data.cohort.ages
    member_ages = np.concatenate([ages[setup.data.indices(g)] for g in setup.learners])
    unseen_ages = ages[setup.data.indices("unseen")]
    return {
        "final_round": last,
        "learner_mae": {g: per_group[g].mae for g in setup.learners},
        "members_mae": members,
        "unseen_mae": per_group["unseen"].mae,
        "memorisation_gap": per_group["unseen"].mae - members,
        "predict_mean_mae": float(np.abs(unseen_ages - member_ages.mean()).mean()),
        # [defense]: ε of every DP-SGD learner and of central DP after the last round, and δ
        **privacy_summary(next((m for m in snapshots.read_metrics(setup.run_dir) if m["round"] == last), {}), cfg),
    }


def finish_run(setup: RunSetup) -> dict:
    """Learning curve and ``DONE`` (the :func:`summarize` of the last round); returns the summary."""
    plot_learning_curve(snapshots.read_metrics(setup.run_dir), setup.run_dir / "learning_curve.png", xlabel="round")
    summary = summarize(setup)
    snapshots.mark_done(setup.run_dir, summary)
    return summary


app = ServerApp()


def _finish_if_complete(setup: RunSetup, rounds: int) -> None:
    """Finish the run once its final round is on disk, so that ``flwr run`` writes DONE as ``fedsim.run`` does."""
    done = snapshots.complete_rounds(setup.run_dir)
    if done and done[-1] >= max(rounds, setup.cfg.federation.rounds):
        finish_run(setup)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run (or continue) the federation of the run directory up to its final round."""
    setup = RunSetup.load(resolve_run_dir(context.run_config))
    fed = setup.cfg.federation
    rounds = int(context.run_config.get(keys.NUM_SERVER_ROUNDS) or fed.rounds)
    done = snapshots.complete_rounds(setup.run_dir)
    last = done[-1] if done else None
    if last is not None:
        _forget_after(setup.run_dir, last)
        if last >= rounds:
            if not snapshots.is_done(setup.run_dir):
                _finish_if_complete(setup, rounds)
            return
    strategy = SnapshotFedAvg(
        run_dir=setup.run_dir,
        learners=len(setup.learners),
        done_rounds=last or 0,
        snapshot_local=fed.snapshot_local,
        max_failures=fed.max_failures,
        architecture=(setup.cfg.model.name, setup.cfg.model_kwargs()),
    )
    gpus = float(setup.run.get("gpus_per_learner", 0.0))
    train_config = ConfigRecord({
        keys.RUN_DIR: str(setup.run_dir.resolve()),
        keys.DEVICE: "cuda" if gpus > 0 else "cpu",
        keys.NUM_THREADS: max(1, int(setup.run.get("cpus_per_learner", 1))),
    })
    # Launched by `flwr run`, this process is the command: it prints the round lines that
    # fedsim's own launcher (run_federation, in-process, no run config) prints itself.
    launched_by_flwr = bool(context.run_config.get(keys.RUN_DIR))
    echo = listening(lambda record: print(record.getMessage(), flush=True)) if launched_by_flwr else nullcontext()
    with echo:
        # [defense] central_dp wraps the strategy in Flower's DP wrapper; the recorder reads the inner one
        wrap_strategy(strategy, setup.cfg, run_dir=setup.run_dir).start(
            grid=grid,
            initial_arrays=initial_arrays(setup, last),
            num_rounds=rounds - (last or 0),
            timeout=fed.round_timeout,
            train_config=train_config,
            evaluate_fn=RoundRecorder(setup, strategy, rounds, resumed=last is not None),
        )
    _finish_if_complete(setup, rounds)

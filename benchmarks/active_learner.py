"""The simulated active malicious learner on the synthetic cohort:
``python benchmarks/active_learner.py [--env skewed-iid] [--round 5] [--targets 100] [--passive RUN]``.

Trains the environment twice for ``round + 1`` rounds with the same seed — once with ``[attack] active`` (learner
L1 ascends the loss on ``targets`` scans, half the other learners' subjects and half unseen, in round ``round``)
and once without — under ``runs/active-learner/``, then scores the targets by their loss drop from round
``round`` to ``round + 1`` (:func:`attacks.membership.active.active_attack`) beside the same seat's passive loss
attack on the same targets, the same drop without the ascent and on the untargeted subjects, and what a controller
sees (:func:`attacks.membership.active.defense_view`: the attacker's update norm against the others', the unseen
MAE with and without the attack). Writes ``benchmarks/results/active_learner.md``; both runs are reused when done.
``--passive RUN`` reuses a finished run of the same environment (e.g. a 40-round paper-schedule run) as the run
without the attack; it must be the same federation up to the ascent (its community model of round ``round - 1``
the same file as the attacked run's).
One torch thread per process (``OMP_NUM_THREADS=1``) is what its rows used on 2 cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
from results_table import machine

from attacks.membership.active import active_attack, defense_view
from fedsim import snapshots
from fedsim.config import ENVIRONMENTS_DIR
from fedsim.errors import FedsimError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "active_learner.md"
TPR = "tpr@0.01"


def _train(env_file: Path, run_dir: Path, rounds: int) -> None:
    if snapshots.is_done(run_dir):
        return
    how = ["--resume", str(run_dir)] if (run_dir / snapshots.METRICS_FILE).is_file() else \
        ["--env", str(env_file), "--out", str(run_dir), "--rounds", str(rounds)]
    done = subprocess.run([sys.executable, "-m", "fedsim.run", *how], cwd=ROOT)
    if done.returncode != 0:
        raise FedsimError(f"training {run_dir.name} failed (exit {done.returncode}); rerun to resume it")


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _interval(r: dict, name: str) -> str:
    return f"{r[name]:.2f} [{r[f'{name}_low']:.2f}, {r[f'{name}_high']:.2f}]"


def _same_federation(active: Path, passive: Path, rnd: int) -> None:
    """The two runs must be one federation until the ascent: their last common community model, byte for byte."""
    model = snapshots.round_dir(active, rnd - 1) / snapshots.MODEL_FILE
    other = snapshots.round_dir(passive, rnd - 1) / snapshots.MODEL_FILE
    if not other.is_file() or model.read_bytes() != other.read_bytes():
        raise FedsimError(f"--passive {passive}: its community model of round {rnd - 1} is not the attacked run's; "
                          "it is another federation (another environment, seed or code)")


def run(env: str, rnd: int, targets: int, scale: float, runs: Path, passive: Path | None = None) -> str:
    base = (ENVIRONMENTS_DIR / f"{env}.toml").read_text()
    attack = (f"\n[attack]\nactive = true\nlearner = 1\ntargets = {targets}\nascent_steps = 10\n"
              f"ascent_scale = {scale:g}\nfrom_round = {rnd}\nascent_rounds = 1\n")
    runs.mkdir(parents=True, exist_ok=True)
    pair = {}
    for name, text in (("active", base + attack), ("passive", base)):
        # the run without the attack does not depend on the attack's settings: one per environment and length
        pair[name] = runs / (f"{env}-active-r{rnd}-t{targets}-s{scale:g}" if name == "active" else f"{env}-passive-r{rnd}")
        if name == "passive" and passive is not None:
            pair[name] = passive
            if not snapshots.is_done(passive) or len(snapshots.complete_rounds(passive)) < rnd + 2:
                raise FedsimError(f"--passive {passive}: not a finished run of at least {rnd + 1} rounds")
            _same_federation(pair["active"], passive, rnd)
            continue
        env_file = runs / f"{env}-{name}.toml"
        env_file.write_text(text)
        _train(env_file, pair[name], rnd + 1)
    start = time.perf_counter()
    rows = active_attack(pair["active"], rnd=rnd, passive_run=pair["passive"])
    seen = [r for r in defense_view(pair["active"], passive_run=pair["passive"]) if r["round"] in (rnd, rnd + 1)]
    lines = ["| statistic | subjects | run | AUC [95 %] | TPR at 1 % FPR [95 %] (FPR reached) | members / non-members |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['statistic']} | {r['subjects']} | {r['run']} | {_interval(r, 'auc')} | "
                     f"{_interval(r, TPR)} ({r[f'{TPR}_fpr']:.3f}) | {r['n_members']} / {r['n_nonmembers']} |")
    lines += ["", "| round | attacker's update norm / others' median (max) | ascent norm | unseen MAE with / without "
              "the attack |", "|---|---|---|---|"]
    for r in seen:
        lines.append(f"| {r['round']} | {r['attacker_norm']:.3f} / {r['others_median_norm']:.3f} "
                     f"({r['others_max_norm']:.3f}); ratio {r['norm_ratio']:.2f} | {r['ascent_norm']:.3f} | "
                     f"{r['unseen_mae']:.2f} / {r.get('passive_unseen_mae', float('nan')):.2f} |")
    command = (f"python benchmarks/active_learner.py --env {env} --round {rnd} --targets {targets} --scale {scale:g}"
               + (f" --passive {_shown(passive)}" if passive is not None else ""))
    return (f"## `{env}`, ascent in round {rnd}, {targets} targets, scale {scale:g}\n\n"
            f"<!-- written by `{command}` on {machine()}, no GPU, {time.strftime('%Y-%m-%d')} (torch "
            f"{torch.__version__}); scoring took {time.perf_counter() - start:.0f} s -->\n\n`{command}`\n\n"
            + "\n".join(lines) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="skewed-iid", help="a federated environment (default: %(default)s)")
    p.add_argument("--round", type=int, default=5, help="the round of the ascent (default: %(default)s)")
    p.add_argument("--targets", type=int, default=100, help="target scans, even (default: %(default)s)")
    p.add_argument("--scale", type=float, default=5.0, help="the ascent's norm over the normal update's (default: 5)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "active-learner", help="where the two runs live")
    p.add_argument("--passive", type=Path, metavar="RUN",
                   help="a finished run of the same environment to use as the run without the attack (default: train one)")
    args = p.parse_args()
    torch.set_num_threads(1)
    try:
        section = run(args.env, args.round, args.targets, args.scale, args.runs.resolve(),
                      None if args.passive is None else args.passive.resolve())
    except FedsimError as e:
        raise SystemExit(f"error: {e}") from None
    head = "# The simulated active malicious learner on the synthetic cohort\n\n"
    old = RESULTS.read_text() if RESULTS.is_file() else head
    title = section.splitlines()[0]
    kept = [s for s in old.split("\n## ")[1:] if not ("## " + s).startswith(title)]
    RESULTS.write_text(head + "".join("## " + s.rstrip() + "\n\n" for s in kept) + section)
    print(f"wrote {RESULTS.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()

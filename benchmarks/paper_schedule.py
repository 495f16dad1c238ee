"""The paper's federated schedule on the CPU model: ``python benchmarks/paper_schedule.py [--envs …] [--rounds …]``.

Trains (or resumes) each ``paper-cpu-*`` federation — 40 rounds × 4 local epochs, plain SGD at batch 1, every
learner's local model kept — and audits membership at rounds 1, 5, 10, 20, 30 and 40 from the malicious learner,
the curious controller and the outsider with ``fedsim audit``'s quick budget (what ``fedsim audit RUN_DIR --round R
--families membership`` runs). Writes ``benchmarks/results/paper_schedule.md`` — environment × round → the community
model's unseen and members' MAE, the memorisation gap, and each seat's strongest attack with its verdict, AUC and
accuracy beside the paper's 60–80 % —, ``docs/paper-schedule.png`` (learning curves above, leakage below) and the
per-environment tables of ``docs/paper-schedule.md`` (between its two markers; the page's prose is written by hand).

Each round's audit is cached in ``RUN_DIR/attacks/schedule/round-RRRR.json`` under the round's model hash, so an
interrupted run resumes where it stopped, and the results file keeps the federations not named in ``--envs``
from their caches; training resumes with ``fedsim train --resume``. One torch thread per
process (``OMP_NUM_THREADS=1``) is what the figures in the results file used on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from results_table import machine  # noqa: E402

from attacks.evaluation import verdicts  # noqa: E402
from attacks.evaluation.summary import controls_table, feature_name  # noqa: E402
from attacks.experiments.audit import run_audit  # noqa: E402
from attacks.experiments.sweep import released_mae  # noqa: E402
from attacks.reporting.audit import attack_rows, seat_summary  # noqa: E402
from attacks.target import Target, open_run  # noqa: E402
from fedsim import snapshots  # noqa: E402
from fedsim.errors import FedsimError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "paper_schedule.md"
FIGURE = ROOT / "docs" / "paper-schedule.png"
#: The docs page whose per-environment tables this script writes, between these two markers.
PAGE = ROOT / "docs" / "paper-schedule.md"
BEGIN, END = "<!-- tables: written by benchmarks/paper_schedule.py -->", "<!-- end of tables -->"
ENVS = ("skewed-iid", "skewed-noniid", "uniform-iid", "uniform-noniid")
ROUNDS = (1, 5, 10, 20, 30, 40)
SEATS = ("malicious learner", "curious controller", "outsider")
BUDGET = "quick"
#: The verdict rule's text: a changed rule re-judges every cached round (from the cached features: minutes).
RULE = hashlib.sha256(json.dumps(verdicts.RULES, sort_keys=True).encode()).hexdigest()[:12]
PAPER = "60–80 % (Gupta et al. 2021: 60 % to over 80 % attack accuracy across their models)"


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def train(env: str, run_dir: Path) -> None:
    """Train ``paper-cpu-ENV`` into ``run_dir``, or resume it; nothing to do once it is done."""
    if snapshots.is_done(run_dir):
        return
    how = ["--resume", str(run_dir)] if (run_dir / snapshots.METRICS_FILE).is_file() else \
        ["--env", f"paper-cpu-{env}", "--out", str(run_dir)]
    say(f"training paper-cpu-{env} ({' '.join(how)})")
    done = subprocess.run([sys.executable, "-m", "fedsim.run", *how], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"error: training paper-cpu-{env} failed (exit {done.returncode}); rerun to resume it")


def audit_round(target: Target, rnd: int) -> dict:
    """One round's membership audit (quick budget) from every seat, cached under the round's community model's
    hash (the average of that round's local models, so it pins them too), the budget and the verdict rule. Delete
    ``RUN_DIR/attacks/schedule/`` to audit again with changed attacks."""
    run_dir = target.run_dir
    model_file = snapshots.round_dir(run_dir, rnd) / "model.safetensors"
    key = hashlib.sha256(model_file.read_bytes()).hexdigest()[:16]
    cache = run_dir / "attacks" / "schedule" / f"round-{rnd:04d}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if (cached.get("model"), cached.get("budget"), cached.get("rule")) == (key, BUDGET, RULE):
            return cached
    say(f"auditing {run_dir.name} round {rnd}")
    start = time.perf_counter()
    result = run_audit(run_dir, families=["membership"], budget=BUDGET, rnd=rnd)
    best = seat_summary(attack_rows(result)).set_index("seat")
    accuracy = controls_table(result.membership, rnd, by=["seat"])
    seats = {}
    for seat in SEATS:
        if seat not in best.index:
            continue
        row = best.loc[seat]
        acc = accuracy[(accuracy["seat"] == seat) & (accuracy["features"].map(feature_name) == row["attack"])]
        seats[seat] = {"attack": row["attack"], "kind": row["kind"], "verdict": row["verdict"],
                       "metric": row["metric"], "auc": float(row["value"]), "low": float(row["low"]),
                       "high": float(row["high"]), "attacks": int(row["attacks"]),
                       "accuracy": float(acc["attack"].iloc[0]) if len(acc) else float("nan")}
    unseen, members = released_mae(run_dir, rnd)  # from the feature cache the audit has just filled
    record = {"model": key, "budget": BUDGET, "rule": RULE, "round": rnd, "members_mae": members, "unseen_mae": unseen, "seats": seats,
              "seconds": round(time.perf_counter() - start, 1)}
    snapshots.write_text(cache, json.dumps(record, indent=2))
    return record


def _seat_cell(s: dict | None) -> str:
    """A seat's verdict and strongest attack: its name, AUC with interval, and accuracy where it has one
    (calibrated attacks score subjects, they do not classify them at a fixed threshold)."""
    if s is None:
        return "—"
    accuracy = "" if math.isnan(s["accuracy"]) else f", {100 * s['accuracy']:.1f} %"
    return f"{s['verdict']}; {s['attack']}: AUC {s['auc']:.2f} [{s['low']:.2f}, {s['high']:.2f}]{accuracy}"


def table(records: dict[str, list[dict]]) -> str:
    head = ["environment", "round", "unseen MAE", "members MAE", "gap", *SEATS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for env, rows in records.items():
        for r in rows:
            cells = [f"paper-cpu-{env}", str(r["round"]), f"{r['unseen_mae']:.2f}", f"{r['members_mae']:.2f}",
                     f"{r['unseen_mae'] - r['members_mae']:+.2f}"]
            lines.append("| " + " | ".join(cells + [_seat_cell(r["seats"].get(seat)) for seat in SEATS]) + " |")
    return "\n".join(lines)


def _page_cell(s: dict | None) -> str:
    """The docs page's shorter cell: the verdict (without the controller's "round-0 control not run", which the
    page says once, and a negative's TPR bound, which the results file keeps), then the attack, AUC, accuracy."""
    if s is None:
        return "—"
    verdict = s["verdict"].replace(" — round-0 control not run; ", " — ").replace(" — round-0 control not run", "")
    verdict = re.sub(r", TPR@1% [0-9.]+ \(95 % upper bound\)", "", verdict)
    accuracy = "" if math.isnan(s["accuracy"]) else f", {100 * s['accuracy']:.1f} %"
    return f"{verdict} — {s['attack']} {s['auc']:.2f} [{s['low']:.2f}, {s['high']:.2f}]{accuracy}"


def page_tables(records: dict[str, list[dict]]) -> str:
    """One table per environment for the docs page: round → MAE and gap, each seat's cell."""
    parts = []
    for env, rows in records.items():
        lines = [f"**`paper-cpu-{env}`**", "", "| round | unseen / members MAE (gap) | " + " | ".join(SEATS) + " |",
                 "|---|---|" + "---|" * len(SEATS)]
        for r in rows:
            lines.append(f"| {r['round']} | {r['unseen_mae']:.2f} / {r['members_mae']:.2f} "
                         f"({r['unseen_mae'] - r['members_mae']:+.2f}) | "
                         + " | ".join(_page_cell(r["seats"].get(seat)) for seat in SEATS) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def write_page_tables(records: dict[str, list[dict]]) -> None:
    """Replace the tables between :data:`BEGIN` and :data:`END` on the docs page, leaving its prose alone."""
    text = PAGE.read_text()
    if BEGIN not in text or END not in text:
        raise FedsimError(f"{PAGE.relative_to(ROOT)} lost its table markers ({BEGIN} … {END}); put them back")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    snapshots.write_text(PAGE, f"{head}{BEGIN}\n\n{page_tables(records)}\n\n{END}{tail}")


def curves(records: dict[str, list[dict]], runs: Path) -> str:
    """One line per environment: the unseen MAE of every round on disk, 0 onwards."""
    lines = []
    for env in records:
        maes = [f"{m['unseen_mae']:.2f}" for m in snapshots.read_metrics(runs / f"paper-cpu-{env}")]
        lines.append(f"- `paper-cpu-{env}`: {' '.join(maes)}")
    return "\n".join(lines)


def figure(records: dict[str, list[dict]], runs: Path) -> None:
    envs = list(records)
    fig, axes = plt.subplots(2, len(envs), figsize=(max(4.2 * len(envs), 6.0), 6.8), sharex=True, sharey="row",
                             squeeze=False)
    for i, env in enumerate(envs):
        curve = snapshots.read_metrics(runs / f"paper-cpu-{env}")
        top, bottom = axes[0, i], axes[1, i]
        top.plot([m["round"] for m in curve], [m["unseen_mae"] for m in curve], color="C0", label="unseen (every round)")
        rows = records[env]
        top.plot([r["round"] for r in rows], [r["members_mae"] for r in rows], "o--", color="C1", label="members (audited rounds)")
        top.set_title(f"paper-cpu-{env}", fontsize=10)
        top.set_ylabel("community model MAE (years)" if i == 0 else "")
        for j, seat in enumerate(SEATS):
            pts = [(r["round"], r["seats"][seat]) for r in rows if seat in r["seats"]]
            if not pts:
                continue
            x = np.array([p[0] for p in pts]) + (j - 1) * 0.4
            auc = np.array([p[1]["auc"] for p in pts])
            err = np.array([[p[1]["auc"] - p[1]["low"], p[1]["high"] - p[1]["auc"]] for p in pts]).T
            bottom.errorbar(x, auc, yerr=err, fmt="o-", capsize=2, color=f"C{j + 2}", label=seat)
        bottom.axhline(0.5, color="grey", lw=0.8, ls=":")
        bottom.set_xlabel("round")
        bottom.set_ylabel("strongest attack's AUC\n(age-matched where it ran)" if i == 0 else "")
        bottom.set_ylim(0.35, 1.0)
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].legend(fontsize=8, loc="upper left")
    fig.suptitle("The paper's schedule on the CPU model (40 rounds × 4 local epochs, SGD at batch 1):\n"
                 "learning curves and membership leakage", fontsize=10)
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", default=",".join(ENVS), help=f"of: {', '.join(ENVS)} (default: all)")
    p.add_argument("--rounds", default=",".join(map(str, ROUNDS)), help="rounds audited (default: %(default)s)")
    p.add_argument("--runs", type=Path, default=ROOT / "runs", help="where the runs live (default: runs/)")
    p.add_argument("--no-train", action="store_true", help="audit the rounds already on disk; train nothing")
    args = p.parse_args()
    try:
        run(args)
    except FedsimError as e:
        raise SystemExit(f"error: {e}") from None


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    envs = [e.strip() for e in args.envs.split(",")]
    bad = [e for e in envs if e not in ENVS]
    if bad:
        raise FedsimError(f"unknown environment {bad[0]!r}; choose from: {', '.join(ENVS)}")
    if not all(r.strip().isdigit() and int(r) > 0 for r in args.rounds.split(",")):
        raise FedsimError(f"--rounds must be trained rounds (positive integers, comma-separated), got {args.rounds!r}")
    wanted, runs = [int(r) for r in args.rounds.split(",")], args.runs.resolve()
    records, settings = {}, {}
    for env in envs:
        run_dir = runs / f"paper-cpu-{env}"
        if not args.no_train:
            train(env, run_dir)
        if not (run_dir / snapshots.METRICS_FILE).is_file():
            say(f"paper-cpu-{env}: not trained yet (no {run_dir}); skipped")
            continue
        target = open_run(run_dir)
        missing = [r for r in wanted if r not in target.rounds]
        if missing:
            say(f"paper-cpu-{env}: rounds {', '.join(map(str, missing))} not on disk yet; audited the others")
        records[env] = [audit_round(target, r) for r in wanted if r in target.rounds]
        settings[env] = snapshots.read_config(run_dir)
    for env in (e for e in ENVS if e not in envs):  # the results file keeps every federation audited before
        cached = sorted((runs / f"paper-cpu-{env}" / "attacks" / "schedule").glob("round-*.json"))
        if cached:
            records[env] = [json.loads(f.read_text()) for f in cached]
            settings[env] = snapshots.read_config(runs / f"paper-cpu-{env}")
    records = {e: r for e, r in sorted(records.items(), key=lambda item: ENVS.index(item[0])) if r}
    if not records:
        raise FedsimError("no round to audit yet; train first (without --no-train)")
    command = ("python benchmarks/paper_schedule.py " + " ".join(sys.argv[1:])).strip()
    done = {e: max(r["round"] for r in rows) for e, rows in records.items()}
    cfg = next(iter(settings.values()))
    train_cfg, federation = cfg["train"], cfg["federation"]
    RESULTS.write_text(
        f"# The paper's federated schedule on the CPU model\n\n"
        f"<!-- written by `{command}` on {machine()}, no GPU, {time.strftime('%Y-%m-%d')} "
        f"(torch {torch.__version__}) -->\n\n"
        f"`{command}` — environments `environments/paper-cpu-*.toml`: {federation['rounds']} rounds × "
        f"{federation['local_epochs']} local epochs, {train_cfg['optimizer']} at batch {train_cfg['batch_size']}, "
        f"lr {train_cfg['lr']:g}, model `{cfg['model']['name']}` {cfg['model'].get('channels')} at "
        f"{'×'.join(map(str, cfg['data']['shape']))}, {cfg['cohort']['subjects']} subjects. "
        f"Audited rounds so far: {', '.join(f'{e} to {r}' for e, r in done.items())}.\n\n"
        f"Each seat's verdict and strongest attack by `fedsim audit RUN_DIR --round R --families membership` ({BUDGET} "
        f"budget: error, prediction + label, gradient magnitude; classifier chosen by cross-validation on the "
        f"attacker's own subjects; the curious controller also runs its calibrated attacks, the other learners' "
        f"local models as references). AUC with its 95 % interval is the age-matched attack's where that control "
        f"ran (what the verdict judges); accuracy is the attack's own, the paper's measure (chance 50 %); paper: "
        f"{PAPER}. MAE in years of the community model; `gap` = unseen − members.\n\n{table(records)}\n\n"
        f"The community model's unseen MAE after every round (`metrics.jsonl` of each run):\n\n{curves(records, runs)}\n")
    figure(records, runs)
    write_page_tables(records)
    say(f"wrote {RESULTS.relative_to(ROOT)}, {FIGURE.relative_to(ROOT)} and the tables of {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

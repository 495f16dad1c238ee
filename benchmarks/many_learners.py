"""How many learners does one machine simulate? ``python benchmarks/many_learners.py [--counts 10,100,300,1000]``.

For each count, a federation of that many tiny learners (16x20x16 volumes, the ``tiny`` model,
2 subjects each, 1 local epoch) runs ``--rounds`` rounds on Flower + Ray exactly as ``fedsim
train`` runs it (one Ray actor per CPU core): wall time of the run, the median time of the
rounds after the first (Ray's actor start-up), the time per learner-round, and the peak resident
memory of this process so far (the controller — Flower's SuperNodes, messages, fedsim's ServerApp —
and the data preparation before it; not the Ray actors or joblib workers). Appends a row per count to ``benchmarks/results/many_learners.md``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import tomli_w
from results_table import append_row, machine

from fedsim import snapshots
from fedsim.config import env_path, load_env, tomllib
from fedsim.data.prepare import prepare_data
from fedsim.federation.run_setup import write_run_setup
from fedsim.federation.simulation import run_federation

RESULTS = Path(__file__).resolve().parent / "results" / "many_learners.md"
PER_LEARNER = 2


def environment(learners: int, rounds: int, folder: Path) -> Path:
    """``tiny`` with ``learners`` equal learners of PER_LEARNER subjects each, 1 local epoch."""
    raw = tomllib.loads(env_path("tiny").read_text())
    raw["cohort"]["subjects"] = int(round(learners * PER_LEARNER / 0.8))
    raw["partition"].update(learners=learners, unseen_fraction=0.2, learner_weights=[1] * learners)
    raw["federation"].update(rounds=rounds, local_epochs=1)
    path = folder / f"many-{learners}.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="10,100,300,1000")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    cpus = os.cpu_count() or 1
    for learners in (int(c) for c in args.counts.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_env(environment(learners, args.rounds, Path(tmp)))
            run_dir = Path(tmp) / "run"
            write_run_setup(run_dir, cfg, prepare_data(cfg), {"cpus_per_learner": 1.0, "gpus_per_learner": 0.0})
            start = time.perf_counter()
            run_federation(run_dir, learners, cpus=1.0, gpus=0.0)
            wall = time.perf_counter() - start
            rounds = {m["round"]: m["seconds"] for m in snapshots.read_metrics(run_dir) if m["round"] > 0}
        later = [rounds[r] for r in sorted(rounds) if r > 1]
        per_round = statistics.median(later)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux): this whole process
        row = [machine(), learners, args.rounds, f"{wall:.1f}", f"{rounds[1]:.1f}",
               f"{per_round:.2f} ({min(later):.2f}–{max(later):.2f})", f"{1e3 * per_round / learners:.1f}",
               f"{rss:.2f}"]
        append_row(RESULTS, "Many tiny learners on one machine (`python benchmarks/many_learners.py`)",
                   ["machine", "learners", "rounds", "run wall (s)", "round 1 (s)", "later rounds (s, median, range)",
                    "ms per learner-round", "benchmark process peak RSS so far (GiB)"], row)
        print(f"{learners} learners: round {per_round:.2f} s, {1e3 * per_round / learners:.1f} ms per learner, "
              f"run {wall:.0f} s, RSS {rss:.2f} GiB ({cpus} Ray actors)")


if __name__ == "__main__":
    main()

"""The seats page of one round: ``RUN_DIR/attacks/seats/round-RRRR/report.html``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from attacks.evaluation.summary import feature_name
from attacks.membership.seats import CONTROLLER, LEARNER, best_sets, seat_table, victim_table
from attacks.reporting.figures import plot_attack_heatmap
from attacks.reporting.html import png, write_page
from attacks.reporting.membership import pair_matrix
from attacks.target import Target
from fedsim import snapshots

__all__ = ["write_seats_report"]


def write_seats_report(target: Target, results: pd.DataFrame, out: Path) -> Path:
    """``report.html``: the seat comparison, the per-victim table and the attacker × victim heat-maps."""
    table, config = seat_table(results), snapshots.read_config(target.run_dir)
    best = best_sets(table)
    rows = [{**r, "name": feature_name(r["features"]), "best": best[r["seat"]] == r["features"]}
            for r in table.to_dict("records")]
    victims = victim_table(results, best)
    maps = []
    for seat in (LEARNER, CONTROLLER):
        rnd = int(table.loc[table["seat"] == seat, "round"].iloc[0])
        grid = pair_matrix(results[results["seat"] == seat], best[seat], rnd)
        maps.append((seat, png(plot_attack_heatmap(grid, title=f"{seat}: {feature_name(best[seat])}, mean over repeats"))))
    return write_page(
        out / "report.html", "seats.html", title=f"Seats: {target.run_dir.name}", run_dir=str(target.run_dir),
        env=str(config.get("name", "?")), classifiers=", ".join(sorted(set(results["classifier"]))),
        repeats=results["repeat"].nunique(), rows=rows,
        victim_columns=[f"{s} ({feature_name(best[s])})" for s in victims.columns],
        victims=[(v, [victims.loc[v, s] for s in victims.columns]) for v in victims.index], maps=maps,
    )

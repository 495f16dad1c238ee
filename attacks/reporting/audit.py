"""The audit's pages: ``RUN_DIR/audit/index.html`` over every family's page, and ``summary.json`` for scripts.

Beside them, ``membership.csv`` and ``calibrated.csv`` hold every membership attack's row (the attribute and
reconstruction rows go where their commands put them, under ``RUN_DIR/attacks/``).

The index's first table has one row per family, question and seat: its verdict (the shared vocabulary of
:mod:`attacks.evaluation.verdicts`), the strongest attack, its number with its 95 % interval, and a link to the
family's page — each of which links back. Every number comes from the same table the family's own page shows
(:func:`~attacks.evaluation.summary.controls_table`, :func:`~attacks.reporting.attribute.attribute_table`,
:func:`~attacks.reporting.reconstruction.summary`), so the index and the pages cannot disagree.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from attacks.evaluation import verdicts
from attacks.evaluation.summary import attack_counts, controls_table, feature_name
from attacks.experiments.audit import AuditResult
from attacks.membership.active import is_active
from attacks.reporting.html import interval, linked_to, write_page
from fedsim import snapshots

__all__ = ["INDEX", "SUMMARY_JSON", "AuditReport", "attack_rows", "epsilon_rows", "seat_summary", "write_audit"]

INDEX, SUMMARY_JSON, MEMBERSHIP_PAGE = "audit/index.html", "audit/summary.json", "audit/membership.html"
HOW_TO_READ = (
    "One row per attack family, question and seat: what that seat learns about a site's subjects. The verdict is "
    "the strongest attack's — a leak is reported as one however small; a negative states the largest leak its "
    "95 % interval still allows, for every attack that seat ran. The number is the strongest attack's AUC (or, for a "
    "reconstruction, the share of scans it names) with its 95 % interval; the family's page has every attack, its "
    "controls and its strength checks. Rows below the table list what this audit did not run, and why: a seat it "
    "skipped has no verdict, which is not an all-clear.")


def _membership_attacks(result: AuditResult) -> pd.DataFrame:
    parts = []
    frames = [(f, kind) for f, kind in ((result.membership, "trained classifier"), (result.calibrated, "calibrated"))
              if f is not None and not f.empty]
    tests: dict[tuple, int] = {}  # a seat's verdicts hold for its trained and calibrated attacks together
    for frame, _ in frames:
        for seat, n in attack_counts(frame, ["seat"]).items():
            tests[seat] = tests.get(seat, 0) + n
    for frame, kind in frames:
        rnd = result.round if result.round in set(frame["round"]) else int(frame["round"].max())
        table = controls_table(frame, rnd, by=["seat"], tests=tests)
        active = table["features"].map(is_active).astype(bool)
        parts.append(table.assign(family="membership", question="membership",
                                  attack_kind=np.where(active, "simulated active attack", kind),
                                  label=[feature_name(f) for f in table["features"]], link=MEMBERSHIP_PAGE))
    if not parts:
        return pd.DataFrame()
    table = pd.concat(parts, ignore_index=True)
    # the verdict judges the age-matched attack where it ran (membership, not distribution shift): so does its number
    matched = table["matched_auc"].notna()
    pick = lambda name: table[f"matched_{name}"].where(matched, table[name])  # noqa: E731
    return table.assign(metric=np.where(matched, "AUC, age-matched", "AUC"), value=pick("auc"), low=pick("auc_low"),
                        high=pick("auc_high"))


def _centralized_calibrated(result: AuditResult) -> bool:
    """Whether the audit ran a centralized run's calibrated attacks (the controller's carry a ``seat``)."""
    return result.calibrated is not None and not result.calibrated.empty and "seat" not in result.calibrated


def _calibrated_attacks(result: AuditResult) -> pd.DataFrame:
    """A centralized run's calibrated attacks (LiRA, RMIA), as their own page summarises them."""
    if not _centralized_calibrated(result):
        return pd.DataFrame()
    from attacks.reporting.calibrated import PAGE, summary_rows

    rows = pd.DataFrame(summary_rows(result.calibrated))
    return rows.assign(family="membership", question="membership", attack_kind="calibrated",
                       link=PAGE, metric="AUC", value=rows["auc"], low=rows["auc_low"], high=rows["auc_high"])


def _attribute_attacks(result: AuditResult) -> pd.DataFrame:
    if result.attribute is None or result.attribute.empty:
        return pd.DataFrame()
    from attacks.attribute.inference import NO_MODEL
    from attacks.reporting.attribute import OUT_DIR, REPORT, attribute_table

    table = attribute_table(result.attribute)
    table = table[table["seat"] != NO_MODEL]
    return table.assign(family="attribute", question=table["attribute"], attack=table["features"],
                        attack_kind="probe", link=f"{OUT_DIR}/{REPORT}", metric="AUC", value=table["auc"],
                        low=table["auc_low"], high=table["auc_high"])


def _reconstruction_attacks(result: AuditResult) -> pd.DataFrame:
    if not result.reconstruction:
        return pd.DataFrame()
    from attacks.reporting.reconstruction import ATTACK_KEYS, OUT_DIR, REPORT, judge, summary, text

    points = summary(pd.DataFrame(result.reconstruction), ATTACK_KEYS)
    rows = []
    for _, r in points.iterrows():
        judged = judge(r)
        by_corr = r.get("identified_corr", float("nan"))
        share = "identified_corr" if not math.isnan(by_corr) and by_corr >= r["identified"] else "identified"
        seat = ("curious controller" if r["attack"] == "gradient" else
                f"holder of {text(r['setting']).split()[0]} activations")
        rows.append({**judged.as_dict(), "family": "reconstruction", "question": "the scan", "seat": seat,
                     "attack": f"{text(r['setting'])}: {judged.attack}", "attack_kind": r["attack"],
                     "link": f"{OUT_DIR}/{REPORT}",
                     "metric": "identified by correlation" if share == "identified_corr" else "identified",
                     "value": r[share], "low": r[f"{share}_low"], "high": r[f"{share}_high"], "chance": r["chance"],
                     "ssim": r["ssim"], "ssim_prior": r["ssim_prior"], "n": r["n"]})
    return pd.DataFrame(rows)


def attack_rows(result: AuditResult) -> pd.DataFrame:
    """Every attack the audit ran, one row each: family, question, seat, attack, verdict (kind, words, bound),
    and its number (``metric``, ``value``, ``low``, ``high``) as the family's own table has it."""
    return _attack_rows(result, _membership_attacks(result))


def _attack_rows(result: AuditResult, membership: pd.DataFrame) -> pd.DataFrame:
    if len(membership):  # controls_table's "attack" is the attack's accuracy; here it names the attack
        membership = membership.drop(columns="attack").rename(columns={"label": "attack"})
    parts = [p for p in (membership, _calibrated_attacks(result), _attribute_attacks(result),
                         _reconstruction_attacks(result)) if len(p)]
    if not parts:
        return pd.DataFrame()
    columns = ["family", "question", "seat", "attack", "attack_kind", "kind", "verdict", "bound", "metric", "value",
               "low", "high", "link"]
    return pd.concat([p.reindex(columns=columns) for p in parts], ignore_index=True)


def seat_summary(attacks: pd.DataFrame) -> pd.DataFrame:
    """One row per family, question and seat: the verdict of its strongest attack (:func:`verdicts.strongest`)."""
    rows = []
    for _, group in attacks.groupby(["family", "question", "seat"], sort=False):
        records = group.to_dict("records")
        best = verdicts.strongest(records, score="value", upper="high")
        rows.append({**best, "attacks": len(records)})
    return pd.DataFrame(rows)


def _membership_page(result: AuditResult, membership: pd.DataFrame, path: Path) -> Path:
    """Each seat's trained and calibrated attacks beside their controls (``membership``: :func:`_membership_attacks`)."""
    seats = [{"seat": seat, "rows": [{**r, "name": f"{r['label']} ({r['attack_kind']})"}
                                     for r in group.to_dict("records")]}
             for seat, group in membership.groupby("seat", sort=False)]
    return write_page(path, "audit_membership.html", title=f"Membership inference on {result.run_dir.name}",
                      round=result.round, seats=seats, budget=result.budget.name, repeats=result.budget.repeats,
                      active=result.active)


def _against(bound: float, accountant: float | None) -> str:
    if accountant is None:
        return "no DP accountant: its ε is ∞"
    if bound > accountant:
        return f"ABOVE the accountant's ε {accountant:.2f}: the DP implementation or its accounting has a bug"
    return f"not above the accountant's ε {accountant:.2f} (a lower bound: it does not show the run private)"


def epsilon_rows(epsilon: Mapping[str, Any]) -> list[dict[str, str]]:
    """The index's "Is the reported ε honest?" table: the accountant's ε of the audited round beside the empirical
    lower bounds (:func:`attacks.experiments.audit._epsilon`), each with how it was found and what it says."""
    delta, accountant = epsilon["delta"], epsilon["dp_sgd"] if epsilon["dp_sgd"] is not None else epsilon["central"]
    rows = [{"what": "accountant: DP-SGD", "value": "∞" if epsilon["dp_sgd"] is None else f"{epsilon['dp_sgd']:.2f}",
             "how": "the run trained without DP-SGD" if epsilon["dp_sgd"] is None else
                    f"Opacus' RDP accountant at round {epsilon['round']}, δ = {delta:g}"
                    + (f", the largest of {epsilon['dp_sgd_accountants']} learners'"
                       if epsilon["dp_sgd_accountants"] > 1 else "")}]
    if epsilon["central"] is not None:
        rows.append({"what": "accountant: central DP", "value": f"{epsilon['central']:.2f}",
                     "how": f"learner-level ε of Flower's DP wrappers at round {epsilon['round']}"})
    attack = epsilon["attack"]
    rows.append({"what": "lower bound: strongest membership attack", "value": "—" if attack is None else
                 f"{attack['epsilon']:.2f}", "how": "no attack row carries counts at a fixed threshold"
                 if attack is None else
                 f"{attack['attack']}: {attack['tp']}/{attack['positives']} members and {attack['fp']}/"
                 f"{attack['negatives']} non-members called members at a threshold {attack['threshold']}; TPR ≥ "
                 f"{attack['tpr_low']:.3f}, FPR ≤ {attack['fpr_high']:.3f} ({attack['confidence']:.0%} "
                 f"Clopper–Pearson, Bonferroni over {attack['tests']} attack rows); "
                 + _against(attack["epsilon"], accountant)})
    canaries = epsilon["canaries"]
    if canaries is not None:
        own = canaries["canary_model_accountant_epsilon"]
        rows.append({"what": "lower bound: one-run canary audit", "value": f"{canaries['epsilon']:.2f}",
                     "how": f"{canaries['right']} of {canaries['guesses']} guesses right ({canaries['k_in']} IN, "
                            f"{canaries['k_out']} OUT) among {canaries['canaries']} canaries, {canaries['included']} "
                            f"trained on, labels + {canaries['shift_years']:.1f} years; {canaries['confidence']:.0%}, "
                            f"the best of {canaries['tried']} guess sizes (Steinke et al. 2023); "
                            + (_against(canaries["epsilon"], accountant) if own is None else
                               f"its model's own accountant: {own:.2f}; " + _against(canaries["epsilon"], own))})
    return rows


class AuditReport(NamedTuple):
    """What :func:`write_audit` wrote: the index page, every attack's row and the index's first table."""

    index: Path
    attacks: pd.DataFrame
    summary: pd.DataFrame


def write_audit(result: AuditResult, *, command: str) -> AuditReport:
    """Every family's page (each linking back), then ``audit/index.html`` and ``audit/summary.json``."""
    run_dir = result.run_dir
    index = run_dir / INDEX
    index.parent.mkdir(parents=True, exist_ok=True)
    membership = _membership_attacks(result)  # its bootstraps once, for the rows and the page
    attacks = _attack_rows(result, membership)
    pages: dict[str, Path] = {}
    for name, frame in (("membership", result.membership), ("calibrated", result.calibrated)):
        if frame is not None:  # every attack's row, so that the pages can be rebuilt and checked
            snapshots.atomic_write(run_dir / "audit" / f"{name}.csv", lambda tmp, f=frame: f.to_csv(tmp, index=False))
    with linked_to(index):
        if result.membership is not None:
            pages["membership"] = _membership_page(result, membership, run_dir / MEMBERSHIP_PAGE)
        if _centralized_calibrated(result):
            from attacks.reporting.calibrated import write_report

            pages["calibrated"] = write_report(run_dir, result.calibrated, scores=result.calibrated_scores)
        if result.attribute is not None or result.properties is not None:
            from attacks.reporting.attribute import write_outputs

            pages["attribute"] = write_outputs(run_dir, result.attribute, result.properties, command=command)
        if result.reconstruction:
            from attacks.reporting.reconstruction import write_outputs as write_reconstruction

            pages["reconstruction"] = write_reconstruction(run_dir, result.reconstruction, result.examples,
                                                           sweep=False, command=command)
    summary = seat_summary(attacks) if len(attacks) else pd.DataFrame()
    skipped = [{"family": s.family, "seat": s.seat, "why": s.why} for s in result.skipped]
    document = {"run": str(run_dir), "round": result.round, "budget": result.budget.name, "command": command,
                "seconds": result.seconds, "summary": summary.to_dict("records"), "attacks": attacks.to_dict("records"),
                "skipped": skipped}
    if result.active:
        document["active_learner_norms"] = result.active
    if result.epsilon is not None:
        document["epsilon"] = result.epsilon
    snapshots.write_text(run_dir / SUMMARY_JSON, json.dumps(document, indent=1, default=_plain))
    links = {name: os.path.relpath(page, index.parent) for name, page in pages.items()}
    rows = [{**r, "href": os.path.relpath(run_dir / r["link"], index.parent),
             "number": interval(r["value"], r["low"], r["high"], digits=2 if r["family"] == "reconstruction" else 3)}
            for r in summary.to_dict("records")]
    write_page(index, "audit.html", title=f"Privacy audit of {run_dir.name}", command=command,
               how_to_read=HOW_TO_READ, rows=rows, skipped=skipped, pages=links, round=result.round,
               budget=result.budget.name, seconds=result.seconds,
               epsilon=epsilon_rows(result.epsilon) if result.epsilon is not None else [])
    return AuditReport(index, attacks, summary)


def _plain(value: Any) -> Any:
    """JSON for numpy numbers; NaN stays a float (json writes NaN)."""
    return float(value) if hasattr(value, "__float__") else str(value)

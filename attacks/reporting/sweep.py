"""The sweep's outputs: ``sweep.csv``, ``sweep.md``, ``sweep.png`` and a self-contained ``sweep.html``, and for the
attribute family ``sweep-attribute.csv`` and ``sweep-attribute.png`` (one privacy–utility plot per family). The
membership rows of the trained classifiers and the calibrated attacks share ``sweep.csv`` (its ``family`` column);
the outputs lead with the strongest attack on each value, which is what judges the defense there."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from attacks.evaluation.summary import CHANCE, TPR
from attacks.experiments.sweep import CALIBRATED, TRAINED, strongest_rows, value_label
from attacks.reporting.figures import plot_privacy_utility
from attacks.reporting.html import png, write_page
from attacks.reporting.markdown import markdown_table
from fedsim import snapshots

__all__ = [
    "ATTRIBUTE_CSV", "ATTRIBUTE_PNG", "CONSOLE_DROPS", "SWEEP_CSV", "SWEEP_HTML", "SWEEP_MD", "SWEEP_PNG",
    "attribute_display", "display_table", "write_outputs",
]

SWEEP_CSV, SWEEP_MD, SWEEP_PNG, SWEEP_HTML = "sweep.csv", "sweep.md", "sweep.png", "sweep.html"
ATTRIBUTE_CSV, ATTRIBUTE_PNG = "sweep-attribute.csv", "sweep-attribute.png"
TARGET_FPR = float(TPR.removeprefix("tpr@"))  # the FPR of TPR, and the TPR of a guessing attack
TPR_COLUMN = f"TPR @ {100 * TARGET_FPR:g}% FPR"
#: What the console shows of :func:`display_table` (a terminal is narrower than a page; the files have all).
CONSOLE_DROPS = ("δ", "members MAE", "gap", "95% CI", "verdict")


def _epsilon_text(row: pd.Series) -> str:
    parts = [f"{row.epsilon:.2f}"] if pd.notna(row.epsilon) else []
    parts += [f"central {row.central_epsilon:.2f}"] if pd.notna(row.central_epsilon) else []
    return ", ".join(parts) or "—"


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``sweep.csv`` as the text a person reads (sweep.md, sweep.html, the console)."""
    key = str(frame["defense"].iloc[0])
    return pd.DataFrame({
        key: frame["value"].map(value_label), "ε": frame.apply(_epsilon_text, axis=1),
        "δ": frame["delta"].map(lambda d: "—" if pd.isna(d) else f"{d:g}"),
        "unseen MAE": frame["unseen_mae"].map("{:.2f}".format),
        "members MAE": frame["members_mae"].map("{:.2f}".format),
        "gap": frame["gap"].map("{:+.2f}".format),
        "attack": [f if family == TRAINED else f"{family}: {f}" for family, f in zip(frame["family"], frame["features"])],
        "verdict": frame["verdict"],
        "accuracy %": frame["accuracy"].map(lambda a: f"{100 * a:.1f}"), "AUC": frame["auc"].map("{:.3f}".format),
        TPR_COLUMN: frame["tpr_at_1pct"].map("{:.3f}".format),
        "95% CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(frame["tpr_at_1pct_low"], frame["tpr_at_1pct_high"])],
        "age-matched %": frame["age_matched"].map(lambda a: "—" if pd.isna(a) else f"{100 * a:.1f}"),
        "round-0 %": frame["round0"].map(lambda a: "—" if pd.isna(a) else f"{100 * a:.1f}"),
    })


def attribute_display(frame: pd.DataFrame) -> pd.DataFrame:
    """``sweep-attribute.csv`` as text: per value, question and seat, its strongest feature set's AUC on members
    beside the label-only baseline."""
    key = str(frame["defense"].iloc[0])
    best = frame.loc[frame.groupby(["value", "question", "seat"], sort=False)["auc"].idxmax()]
    return pd.DataFrame({
        key: best["value"].map(value_label), "ε": best.apply(_epsilon_text, axis=1),
        "unseen MAE": best["unseen_mae"].map("{:.2f}".format), "question": best["question"], "seat": best["seat"],
        "features": best["features"], "verdict": best["verdict"], "AUC": best["auc"].map("{:.3f}".format),
        "95% CI": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(best["auc_low"], best["auc_high"])],
        "label-only AUC": best["label_only"].map("{:.3f}".format), "unseen AUC": best["unseen_auc"].map("{:.3f}".format),
    })


def _attribute_points(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per seat for the first question (sex, where asked: one site question each would crowd the plot;
    the table has them all), each seat's feature set with the highest mean AUC over the values."""
    frame = frame[frame["question"] == frame["question"].iloc[0]]
    chosen = frame.groupby(["question", "seat", "features"], sort=False)["auc"].mean().reset_index()
    chosen = chosen.loc[chosen.groupby(["question", "seat"], sort=False)["auc"].idxmax()]
    keep = frame.merge(chosen[["question", "seat", "features"]], on=["question", "seat", "features"])
    return keep.assign(features=keep["question"] + ", " + keep["seat"] + ": " + keep["features"])


HOW_TO_READ = (
    "MAE in years of the predictions the model releases (with prediction_noise: the noisy ones), on unseen subjects "
    "and on its training members; gap = unseen − members. ε (DP-SGD: the largest over learners) at δ where the run "
    "reports them. Each run is attacked as attacks.run chooses (centralized: its best-validation epoch; federated: "
    "its last round, the mean over attacker × victim pairs; sweep.csv has the round), mean over repeats. Chance is "
    f"{100 * CHANCE:.0f}% accuracy, AUC {CHANCE}, TPR {TARGET_FPR:g} at {100 * TARGET_FPR:g}% FPR (interval: 95% "
    "bootstrap over victims and repeats). Verdicts as on every page: 'leak detected' where the age-matched attack's "
    "interval excludes chance and the round-0 (untrained) control; 'not detected' with the largest AUC its interval "
    "allows. Calibrated attacks (LiRA, RMIA, the loss baseline) test each subject against reference models trained as "
    "the run was, its defense included; on a centralized run each is one attack on one test set (AUC interval from "
    "the sample sizes, round-0 control, no age-matched one), on a federation the curious controller's, with the other "
    "learners' local models as references. Each value is judged by its strongest attack, trained or calibrated."
)
STRONGEST_NOTE = ("The attack that judges each value: the strongest detected leak (by AUC), else the most telling "
                  "verdict; where nothing is detected, the attack whose interval allows the largest AUC, so that bound "
                  "holds for every attack run on that value.")


def _figure(frame: pd.DataFrame, title: str, path: Path) -> str:
    points = frame.assign(label=[value_label(v) + ("" if pd.isna(e) else f", ε {e:.1f}")
                                 for v, e in zip(frame["value"], frame["epsilon"])]).rename(columns={
        "tpr_at_1pct": "tpr", "tpr_at_1pct_low": "tpr_low", "tpr_at_1pct_high": "tpr_high"})
    figure = png(plot_privacy_utility(points, chance_auc=CHANCE, chance_tpr=TARGET_FPR, title=title))
    snapshots.atomic_write(path, lambda tmp: Path(tmp).write_bytes(base64.b64decode(figure)))
    return figure


def _membership_points(frame: pd.DataFrame) -> pd.DataFrame:
    """What the membership plot draws: a line per trained feature set, and one through each value's strongest
    calibrated attack (a line per calibrated attack would hide the classifiers')."""
    trained = frame[frame["family"] == TRAINED]
    calibrated = frame[frame["family"] == CALIBRATED]
    if calibrated.empty:
        return trained
    return pd.concat([trained, strongest_rows(calibrated).assign(features=f"{CALIBRATED} (strongest)")])


def write_outputs(out: Path, frame: pd.DataFrame, command: str, title: str, attribute: pd.DataFrame | None = None,
                  notes: Sequence[str] = ()) -> Path:
    """``sweep.csv``, ``sweep.md``, ``sweep.png`` (and the attribute family's csv and png) and the self-contained
    ``sweep.html``, led by each value's strongest attack; ``notes``: what was not run and why (e.g. a federation
    that kept no local models has no calibrated attack). Returns the page."""
    snapshots.atomic_write(out / SWEEP_CSV, lambda tmp: frame.to_csv(tmp, index=False))
    shown = display_table(frame)
    strongest = strongest_rows(frame)
    blocks = [{"title": "Judged by the strongest attack", "note": " ".join([STRONGEST_NOTE, *notes]),
               "table": display_table(strongest), "kinds": list(strongest["kind"])},
              {"title": "Membership inference", "figure": _figure(_membership_points(frame), title, out / SWEEP_PNG),
               "table": shown, "kinds": list(frame["kind"])}]
    if attribute is not None and len(attribute):
        snapshots.atomic_write(out / ATTRIBUTE_CSV, lambda tmp: attribute.to_csv(tmp, index=False))
        blocks.append({"title": "Attribute inference (AUC on members; compare with the label-only AUC)",
                       "figure": _figure(_attribute_points(attribute), f"{title}: attribute inference "
                                         f"({attribute['question'].iloc[0]})", out / ATTRIBUTE_PNG),
                       "table": attribute_display(attribute)})
    else:
        for stale in (ATTRIBUTE_CSV, ATTRIBUTE_PNG):  # no attribute rows this time: none from an earlier sweep
            (out / stale).unlink(missing_ok=True)
    snapshots.write_text(out / SWEEP_MD, f"# {title}\n\n```\n{command}\n```\n\n{HOW_TO_READ}\n\n" + "\n".join(
        f"## {b['title']}\n\n" + (f"{b['note']}\n\n" if b.get("note") else "") + markdown_table(b["table"]) for b in blocks))
    for b in blocks:
        b["columns"], b["rows"] = list(b["table"].columns), [list(map(str, r)) for r in b.pop("table").itertuples(index=False)]
    return write_page(out / SWEEP_HTML, "sweep.html", title=title, command=command, how_to_read=HOW_TO_READ, blocks=blocks)

"""One verdict vocabulary for every attack family: the words a site takes to its ethics board.

A privacy audit is judged by its negative verdicts, so every verdict has three parts: what was found
(or the largest leak its interval still allows), the attack and its strength, and the controls it
beat. The words, and the rule behind each:

- **leak detected** — the attack's interval (its AUC; a reconstruction's share of scans named or SSIM
  gain) excludes its reference (chance for membership, the label-only baseline for an attribute, the
  prior and chance for a reconstruction) and its round-0 control (the same attack on the untrained
  model). Where one seat ran several membership or attribute attacks the interval is widened for their
  number (Bonferroni: 95 % for all of them together), so that the best of many attacks is not a leak by
  luck. It is **large** when the AUC reaches :data:`LARGE_AUC` or the TPR at 1 % FPR reaches
  :data:`LARGE_TPR` (ten times the FPR);
  otherwise **small** — a small leak is still a leak.
- **not detected** — always with the largest leak the interval allows ("at most AUC 0.55, 95 % upper
  bound") and the attack that was run.
- **distribution shift** — membership: the plain attack beats its age-matched control, or the
  untrained model beats chance: the attack tells the groups apart, not members from non-members.
- **in the scan, not from training** — an attribute the untrained model reads as well: the seat
  learns it, but training added nothing.
- **attack too weak to tell** — the attack's own positive control or sanity check failed: its
  silence says nothing.

:func:`membership`, :func:`attribute` and :func:`reconstruction` apply the rule to each family's
summary rows; they change words, never numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

__all__ = [
    "CHANCE", "DETECTED", "KINDS", "LARGE_AUC", "LARGE_TPR", "NOT_DETECTED", "NO_CONTROLS", "SCAN", "SHIFT",
    "RULES", "TOO_WEAK", "Verdict", "attribute", "excludes", "membership", "reconstruction", "strongest", "z_for",
]

CHANCE = 0.5
#: A detected leak is "large" from this AUC, or from this TPR at 1 % FPR (ten times the FPR), on.
LARGE_AUC, LARGE_TPR = 0.60, 0.10
#: A reconstruction is a large leak when the scan itself is recovered or at least this share of scans is named.
LARGE_SHARE = 0.5
#: How many standard errors of a difference make "excludes" (two-sided 95 %).
Z = 1.96

DETECTED, NOT_DETECTED, SHIFT, SCAN, TOO_WEAK, NO_CONTROLS = (
    "detected", "not-detected", "shift", "scan", "too-weak", "no-controls")
#: kind -> the words a table shows (a detected leak adds its size).
KINDS = {DETECTED: "leak detected", NOT_DETECTED: "not detected", SHIFT: "distribution shift",
         SCAN: "in the scan, not from training", TOO_WEAK: "attack too weak to tell",
         NO_CONTROLS: "not judged: no controls run"}
#: kind -> its rule in one sentence: what every report's legend and docs/verdicts.md say.
RULES = {
    DETECTED: "the attack's 95 % interval excludes its reference (chance for membership, the label-only baseline for "
              "an attribute, the prior or chance for a reconstruction) and the same attack on the untrained (round-0) "
              "model — for membership and attributes in AUC, widened so that it holds at 95 % for all the attacks one seat "
              "ran together (Bonferroni); "
              f"large from AUC {LARGE_AUC:.2f} or TPR {LARGE_TPR:.2f} at 1 % FPR (reconstruction: the scan recovered, "
              f"or {LARGE_SHARE:.0%} of scans named), small below — a small leak is still a leak.",
    NOT_DETECTED: "no interval excludes the reference; the verdict states the largest leak the interval still allows "
                  "(its 95 % upper bound) and the attack that was run.",
    SHIFT: "membership: the plain attack beats its age-matched control, or the untrained model beats chance — the "
           "attack tells the groups apart, not members from non-members.",
    SCAN: "attribute: above the label-only baseline, but the untrained model reads it as well — the seat learns it, "
          "training added nothing.",
    TOO_WEAK: "the attack's own positive control or sanity check failed, so its silence says nothing.",
    NO_CONTROLS: "the controls were not run: membership and distribution shift cannot be told apart.",
}
#: The order in which one seat's verdicts rank, strongest evidence of a leak first.
RANK = (DETECTED, SCAN, SHIFT, TOO_WEAK, NOT_DETECTED, NO_CONTROLS)


@dataclass(frozen=True)
class Verdict:
    """A verdict: its ``kind`` (a key of :data:`KINDS`, usable as a CSS class), the ``size`` of a detected leak, the ``bound`` a
    negative states, the ``attack`` and its strength, the ``controls`` it beat, and a ``note``."""

    kind: str
    size: str = ""
    bound: str = ""
    attack: str = ""
    controls: tuple[str, ...] = ()
    note: str = ""

    @property
    def words(self) -> str:
        """What a table cell says: "leak detected, small", "not detected: at most AUC 0.55 (95 % upper bound)"…"""
        words = KINDS[self.kind] + (f", {self.size}" if self.size else "")
        if self.bound:
            words += f": {self.bound}"
        return words + (f" — {self.note}" if self.note else "")

    @property
    def text(self) -> str:
        """The whole verdict: its words, the attack that was run, and the controls it beat."""
        parts = [self.words]
        if self.attack:
            parts.append(f"attack: {self.attack}")
        if self.controls:
            parts.append(f"beat: {', '.join(self.controls)}")
        return "; ".join(parts)

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "size": self.size, "bound": self.bound, "verdict": self.words,
                "attack": self.attack, "controls": ", ".join(self.controls), "note": self.note}


def _get(row: Mapping[str, Any] | None, key: str) -> float:
    value = None if row is None else row.get(key)
    return float("nan") if value is None else float(value)


def z_for(tests: int) -> float:
    """The standard errors a difference must exceed for ``tests`` one-sided tests at 2.5 % together (Bonferroni):
    :data:`Z` for one test, 2.39 for three, 2.73 for eight."""
    return Z if tests <= 1 else NormalDist().inv_cdf(1 - 0.025 / tests)


def excludes(row: Mapping[str, Any] | None, reference: Mapping[str, Any] | float | None, metric: str, *,
             tests: int = 1) -> bool:
    """Whether the summary ``row``'s ``metric`` (``accuracy`` or ``auc``) lies above ``reference``: a constant
    below its 95 % interval, or another summary row by :data:`Z` standard errors of the difference. With
    ``tests`` > 1 (the attacks one seat ran) both are widened to :func:`z_for` ``(tests)``: the lower end of the
    interval moves away from the value by ``z_for(tests) / Z``."""
    if row is None or reference is None or math.isnan(_get(row, metric)):
        return False
    widen = z_for(tests) / Z
    if not isinstance(reference, (int, float)):  # another summary row (a Mapping or a pandas Series)
        other = _get(reference, metric)
        if math.isnan(other):
            return False
        se = math.sqrt(sum(x * x for x in (_get(row, f"{metric}_se"), _get(reference, f"{metric}_se")) if not math.isnan(x)))
        return _get(row, metric) - other > widen * Z * se if se > 0 else False
    value = _get(row, metric)
    return value - widen * (value - _get(row, f"{metric}_low")) > float(reference)


def _size(row: Mapping[str, Any]) -> str:
    return "large" if _get(row, "auc") >= LARGE_AUC or _get(row, "tpr_at_1pct") >= LARGE_TPR else "small"


def _bound(row: Mapping[str, Any] | None) -> str:
    """The largest leak ``row``'s interval allows, in AUC and TPR at 1 % FPR where known."""
    auc, tpr = _get(row, "auc_high"), _get(row, "tpr_at_1pct_high")
    if math.isnan(auc):
        acc = _get(row, "accuracy_high")
        return "no interval (one attack)" if math.isnan(acc) else f"at most {100 * acc:.1f} % accuracy (95 % upper bound)"
    return f"at most AUC {auc:.2f}" + ("" if math.isnan(tpr) else f", TPR@1% {tpr:.2f}") + " (95 % upper bound)"


def _metric(row: Mapping[str, Any] | None) -> str:
    """What a membership verdict judges: the AUC (threshold-free, the number every table shows), or the accuracy
    where an attack has no AUC."""
    return "accuracy" if math.isnan(_get(row, "auc")) else "auc"


def _beats(row: Mapping[str, Any] | None, reference: Mapping[str, Any] | float | None, tests: int = 1) -> bool:
    return excludes(row, reference, _metric(row), tests=tests)


def _multiplicity(row: Mapping[str, Any] | None, reference: Mapping[str, Any] | float, tests: int, what: str) -> str:
    """The note of a negative whose own 95 % interval excludes ``reference`` (called ``what``) but not once
    widened for ``tests``."""
    if tests > 1 and excludes(row, reference, _metric(row)):
        return f"its own 95 % interval excludes {what}, but not for the {tests} attacks this seat ran together"
    return ""


def membership(attack: Mapping[str, Any] | None, round0: Mapping[str, Any] | None, matched: Mapping[str, Any] | None,
               *, shift: bool = False, weak: str = "", name: str = "", tests: int = 1) -> Verdict:
    """The membership verdict from :func:`attacks.evaluation.summary.summarise` rows of the attack and its
    controls. The age-matched attack (where run) must beat chance and the round-0 control; ``shift``: the
    plain attack's lead over its controls is distribution shift (the caller's rule); ``weak``: why the
    attack's own strength check failed, if it did; ``tests``: how many attacks the seat ran (:func:`excludes`)."""
    if round0 is None and matched is None:
        return Verdict(NO_CONTROLS, attack=name, note="membership and distribution shift cannot be told apart")
    base = attack if matched is None else matched
    missing = [c for c, s in (("round-0", round0), ("age-matched", matched)) if s is None]
    note = f"{missing[0]} control not run" if missing else ""
    beat = ["chance"] if _beats(base, CHANCE, tests) else []
    if round0 is not None and beat and _beats(base, round0, tests):
        beat.append("round-0 model")
    if matched is not None and beat:
        beat.append("age-matched non-members")
    detected = bool(beat) and (round0 is None or "round-0 model" in beat)
    if detected:
        return Verdict(DETECTED, size=_size(base), attack=name, controls=tuple(beat),
                       note="; ".join(n for n in (note, "inflated by distribution shift" if shift else "") if n))
    if shift:
        return Verdict(SHIFT, attack=name, note=note)
    if weak:
        return Verdict(TOO_WEAK, attack=name, note=weak)
    note = "; ".join(n for n in (note, _multiplicity(base, CHANCE, tests, "chance")) if n)
    return Verdict(NOT_DETECTED, bound=_bound(base), attack=name, note=note)


def attribute(attack: Mapping[str, Any] | None, baseline: Mapping[str, Any] | None, round0: Mapping[str, Any] | None,
              *, weak: str = "", name: str = "", tests: int = 1) -> Verdict:
    """The attribute verdict: the seat's AUC must beat the label-only baseline (what the attacker knows without
    the model; chance where none was run) and the untrained model; above the baseline but not the untrained
    model, the attribute is in the scan, not from training. ``tests``: the probes the seat ran (:func:`excludes`)."""
    reference = CHANCE if baseline is None else baseline
    if excludes(attack, reference, "auc", tests=tests):
        beat = ("label-only baseline" if baseline is not None else "chance",)
        if round0 is None:
            return Verdict(DETECTED, size=_size(attack), attack=name, controls=beat, note="round-0 control not run")
        if excludes(attack, round0, "auc", tests=tests):
            return Verdict(DETECTED, size=_size(attack), attack=name, controls=(*beat, "round-0 model"))
        return Verdict(SCAN, attack=name, controls=beat)
    if weak:
        return Verdict(TOO_WEAK, attack=name, note=weak)
    return Verdict(NOT_DETECTED, bound=_bound(attack), attack=name,
                   note=_multiplicity(attack, reference, tests, "chance" if baseline is None else "the label-only baseline"))


def reconstruction(row: Mapping[str, Any], *, name: str = "") -> Verdict:
    """The reconstruction verdict of one summary row (:func:`attacks.reporting.reconstruction.summary`): a leak
    where the SSIM gain's interval excludes the prior's or an identified share's (nearest scan, or by
    correlation) excludes chance; "too weak" where the positive control or the return test failed."""
    recovered = _get(row, "ssim_gain_low") > 0
    shares = [(k, _get(row, k), _get(row, f"{k}_low"), _get(row, f"{k}_high")) for k in ("identified", "identified_corr")]
    chance = _get(row, "chance")
    named = [(k, v) for k, v, low, _ in shares if low > chance]
    if recovered or named:
        found = (["SSIM above the prior's"] if recovered else []) + [
            f"{'identified' if k == 'identified' else 'identified by correlation'} {v:.2f}" for k, v in named]
        large = recovered or any(v >= LARGE_SHARE for _, v in named)
        return Verdict(DETECTED, size="large" if large else "small", attack=name,
                       controls=(("prior",) if recovered else ()) + (("chance",) if named else ()), note=", ".join(found))
    if _get(row, "control_recovered") < 1:
        return Verdict(TOO_WEAK, attack=name, note="it did not recover its positive control")
    if _get(row, "return_passed") < 1:
        return Verdict(TOO_WEAK, attack=name, note="it did not come back to the truth from noise (return test failed)")
    highs = [high for _, _, _, high in shares if not math.isnan(high)]
    bound = f"at most {max(highs):.2f} of scans identified (95 % upper bound)" if highs else ""
    checked = "return test and positive control passed" if not math.isnan(_get(row, "return_passed")) else ""
    return Verdict(NOT_DETECTED, bound=bound, attack=name, note=checked)


def strongest(rows: Sequence[Mapping[str, Any]], *, score: str, upper: str) -> Mapping[str, Any] | None:
    """One seat's row from its attacks' rows (each with a verdict ``kind``): the highest ``score`` among detected
    leaks if any, else among the highest-ranked kind; among "not detected" the highest ``upper`` bound, so that the
    bound a seat states holds for every attack it ran."""
    if not rows:
        return None
    kind = min((r["kind"] for r in rows), key=RANK.index)
    key = upper if kind == NOT_DETECTED else score

    def value(row: Mapping[str, Any]) -> float:
        x = _get(row, key)
        return -math.inf if math.isnan(x) else x
    return max((r for r in rows if r["kind"] == kind), key=value)

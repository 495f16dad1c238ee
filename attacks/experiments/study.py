"""The study: train every environment (centralized baselines and federations), attack each, tabulate.

Each step is skipped when its output is on disk and still describes its inputs: a trained run is
found by its ``DONE`` (a study's federation also by its local models, :func:`train_env`), an attack
by a stamp (``attacks/study.json``) that records the attack's arguments, the digest of every
snapshot of the run and the digest of the ``results.csv`` it wrote.
``python -m attacks.run`` rewriting the results, or ``fedsim.run --resume --rounds N`` extending
the run, therefore makes the study attack again instead of reusing stale numbers. The sweep
(:mod:`attacks.experiments.sweep`) reuses these steps, and adds the calibrated attacks (:func:`calibrated_cached`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from attacks.api import attack_run, feature_sets
from attacks.attribute.inference import DEFAULT_CLASSIFIER as ATTRIBUTE_CLASSIFIER
from attacks.attribute.inference import NO_MODEL, attribute_attacks
from attacks.attribute.labels import ATTRIBUTES, questions
from attacks.evaluation.summary import controls_table, main_round, summarise
from attacks.experiments.names import DEFAULT_ENVS
from attacks.membership.calibrated import run_calibrated
from attacks.membership.calibration import FAMILY_REFERENCES
from attacks.membership.classifiers import DEFAULT_CLASSIFIER
from attacks.membership.seats import MIN_CALIBRATION_LEARNERS, controller_calibrated
from attacks.reporting.attribute import OUT_DIR as ATTRIBUTE_DIR
from attacks.reporting.attribute import RESULTS_CSV as ATTRIBUTE_CSV
from attacks.reporting.attribute import write_outputs as write_attribute
from attacks.reporting.calibrated import RESULTS_CSV as CALIBRATED_CSV
from attacks.reporting.calibrated import write_results as write_calibrated
from attacks.reporting.membership import PAPER_TABLE1, RESULTS_CSV, pair_matrix, paper_column, write_report, write_results
from attacks.signals.cache import FEATURES_VERSION
from attacks.signals.features import TABLE1
from attacks.target import is_centralized, missing_local_models, open_run, resolve_rounds
from attacks.threats.seats import skipped_pairs_said
from attacks.threats.splits import DEFAULT_REPEATS
from fedsim import snapshots
from fedsim.config import load_env
from fedsim.data.partition import learner_groups
from fedsim.errors import FedsimError

__all__ = [
    "DEFAULT_ENVS", "AttackSettings", "attack_cached", "attribute_cached", "attribute_row",
    "calibrated_cached", "calibrated_skipped", "environment_row", "kept_local_models", "pair_table", "stamp_of", "table1",
    "train_env",
]

DEFAULT_ATTRIBUTE_REPEATS = 3  # a centralized run's draws of the attack halves (a federation's are fixed)
#: Bump when the attribute family's attacks change what they compute, so the study attacks again.
ATTRIBUTE_VERSION = 1
#: Bump when the calibrated family's attacks change what they compute, so the sweep attacks again.
CALIBRATED_VERSION = 1
#: What ``python -m attacks.calibrated`` writes (a centralized run), and the curious controller's rows (a federation).
CONTROLLER_CSV = "calibrated-controller.csv"
STAMP = "study.json"
CALIBRATED_STAMP = "calibrated-study.json"
Say = Callable[[str], object]


@dataclass(frozen=True)
class AttackSettings:
    """What the study attacks every run with (``python -m attacks.run``'s options)."""

    features: str = "table1"
    classifier: str = DEFAULT_CLASSIFIER
    repeats: int = DEFAULT_REPEATS

    def __post_init__(self) -> None:
        feature_sets(self.features, classifier=self.classifier, repeats=self.repeats)  # a typo fails before training

    def args(self) -> list[str]:
        """The same settings as ``attacks.run`` arguments (shown beside every table)."""
        return ["--features", self.features, "--classifier", self.classifier, "--repeats", str(self.repeats)]


def train_env(env: str, run_dir: Path, cohort: Path | None, say: Say, *, device: str = "auto",
              local_models: bool = False) -> None:
    """Train ``env`` into ``run_dir`` in a child process (Ray and torch state stay out of this one);
    ``device`` is the centralized training's (federated learners: CUDA when torch sees it).

    ``local_models`` (the study's runs): a federation keeps every learner's local model of every round
    (``--snapshot-local``), which the curious controller's attacks read (``fedsim seats``, ``fedsim reconstruct``,
    the calibrated family). A run on disk made without them is not reused: resuming or extending it cannot add
    the local models of its earlier rounds, so it is moved aside to ``<run_dir>.no-local-models`` and trained again.
    An interrupted federation resumes; an interrupted centralized run cannot, so it is deleted and trained again.
    """
    centralized = load_env(env).partition.learners == 0
    if local_models and not centralized and (run_dir / snapshots.CONFIG_FILE).is_file() and not kept_local_models(run_dir):
        aside = run_dir.with_name(f"{run_dir.name}.no-local-models")
        if aside.exists():
            raise FedsimError(f"{str(run_dir)!r} kept no local models, and {str(aside)!r} is in the way of moving it "
                              "aside; delete one of them and rerun")
        run_dir.rename(aside)
        say(f"[yellow]{env}[/]: the run in {run_dir} kept no local models; moved to {aside}, training again")
    if snapshots.is_done(run_dir):
        say(f"[dim]{env}: trained run found in {run_dir}[/]")
        return
    module = "fedsim.centralized" if centralized else "fedsim.run"
    if centralized and run_dir.exists():  # an interrupted centralized run cannot resume: its epochs are of no use
        shutil.rmtree(run_dir)
        say(f"[yellow]{env}[/]: the centralized run in {run_dir} was interrupted and cannot resume; training again")
    if snapshots.complete_rounds(run_dir):
        args = ["--resume", str(run_dir)]
    else:
        args = ["--env", env, "--out", str(run_dir), *(["--cohort", str(cohort)] if cohort else [])]
        args += ["--device", device] if centralized and device != "auto" else []
        args += ["--snapshot-local"] if local_models and not centralized else []
    say(f"[bold]{env}[/]: python -m {module} {' '.join(args)}")
    code = subprocess.call([sys.executable, "-m", module, *args])
    if code != 0 or not snapshots.is_done(run_dir):
        raise FedsimError(f"training {env!r} failed (exit {code}); see above, then rerun the same command to continue")


def kept_local_models(run_dir: Path) -> bool:
    """Whether a federated run directory was made to keep every learner's local model (``[federation] snapshot_local``)."""
    return bool(snapshots.read_config(run_dir).get("federation", {}).get("snapshot_local", False))


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def stamp_of(run_dir: Path, settings: AttackSettings, *, seed: int = 0) -> dict[str, Any]:
    """What an attack's results were computed from: the settings and seed, the feature definitions'
    version, every round's community model (by content) and the run's ``DONE``, and the results file itself."""
    rounds = {str(r): _sha256(snapshots.round_dir(run_dir, r) / snapshots.MODEL_FILE)
              for r in snapshots.complete_rounds(run_dir)}
    return {"settings": asdict(settings), "seed": seed, "features_version": FEATURES_VERSION, "rounds": rounds, "done": _sha256(run_dir / snapshots.DONE_FILE),
            "results": _sha256(run_dir / "attacks" / RESULTS_CSV)}


def attack_cached(run_dir: Path, settings: AttackSettings, *, say: Say, progress: Callable[[str, int, int], None] | None = None,
                  seed: int = 0) -> pd.DataFrame:
    """Attack ``run_dir`` as ``attacks.run`` does, unless its results are stamped as computed from
    the same settings and snapshots; returns the results."""
    out = run_dir / "attacks"
    stamp = out / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == stamp_of(run_dir, settings, seed=seed):
        say(f"[dim]{run_dir.name}: attack results found in {out}[/]")
        return pd.read_csv(out / RESULTS_CSV)
    say(f"[bold]{run_dir.name}[/]: python -m attacks.run {run_dir} {' '.join(settings.args())}")
    target = open_run(run_dir)
    rows = attack_run(target, threat="centralized" if is_centralized(target) else "learner", features=settings.features,
                      classifier=settings.classifier, repeats=settings.repeats, seed=seed, progress=progress)
    results = write_results(run_dir, rows)
    write_report(run_dir, results, target, seed=seed)
    snapshots.write_text(stamp, json.dumps(stamp_of(run_dir, settings, seed=seed), indent=1))
    return pd.read_csv(out / RESULTS_CSV)


def _local_models(run_dir: Path) -> dict[str, str | None]:
    """Every learner's local model of every round, by content: what the curious controller reads."""
    return {f"{r}/{p.name}": _sha256(p) for r in snapshots.complete_rounds(run_dir)
            for p in sorted(snapshots.round_dir(run_dir, r).glob("L*.safetensors"))}


def _attributes(target: Any) -> list[str]:
    """The attributes a run's cohort can be asked about: sex, and site where it has more than one."""
    manifest = target.manifest
    return [a for a in ATTRIBUTES if manifest is not None and a in manifest.columns
            and manifest[a].astype(str).str.strip().nunique() > 1]


def attribute_cached(run_dir: Path, *, controls: bool = True, say: Say, progress: Callable[[str, int, int], None] | None = None,
                     seed: int = 0) -> pd.DataFrame | None:
    """Attribute inference on ``run_dir`` (sex, and site where the cohort has sites; every seat, no property
    inference) as ``attacks.attribute`` does, unless stamped as computed from the same snapshots; its results
    (None, said, when the cohort has neither attribute)."""
    out = run_dir / ATTRIBUTE_DIR
    stamp, repeats = out / STAMP, DEFAULT_ATTRIBUTE_REPEATS if controls else 1

    def current() -> dict[str, Any]:
        """The membership stamp's snapshots and DONE, plus what only this family reads: the manifest (the
        attributes), every learner's local model (the controller), the family's version and settings."""
        stamp = stamp_of(run_dir, AttackSettings(), seed=seed)
        manifest = snapshots.read_config(run_dir).get("cohort", {}).get("manifest")
        settings = {"classifier": ATTRIBUTE_CLASSIFIER, "repeats": repeats, "controls": controls,
                    "version": ATTRIBUTE_VERSION}
        return {**stamp, "settings": settings, "manifest": _sha256(Path(manifest)) if manifest else None,
                "local_models": _local_models(run_dir), "results": _sha256(out / ATTRIBUTE_CSV)}
    if stamp.is_file() and json.loads(stamp.read_text()) == current():
        say(f"[dim]{run_dir.name}: attribute results found in {out}[/]")
        return pd.read_csv(out / ATTRIBUTE_CSV, dtype={"attacker": str, "victim": str})
    target = open_run(run_dir)
    attributes = _attributes(target)
    if not attributes:
        say(f"[yellow]note:[/] {run_dir.name}: attribute inference skipped: the cohort's manifest has no sex or site column "
            "with two values or more")
        return None
    rnd = resolve_rounds("default", target, centralized=is_centralized(target))[0]
    command = ["python", "-m", "attacks.attribute", str(run_dir), "--attribute", ",".join(attributes), "--no-property",
               "--repeats", str(repeats), *([] if controls else ["--no-controls"])]
    say(f"[bold]{run_dir.name}[/]: {' '.join(command)}")
    frames = []
    with skipped_pairs_said(say), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        for attribute in attributes:
            try:  # a user's column with gaps, or a federation by site, skips that question, not the study
                frames += [attribute_attacks(target, q, rnd=rnd, repeats=repeats, seed=seed, controls=controls,
                                             progress=progress) for q in questions(target, attribute)]
            except FedsimError as e:
                say(f"[yellow]note:[/] {run_dir.name}: {attribute} not attacked: {e}")
    if not frames:
        return None
    (out / ATTRIBUTE_CSV).unlink(missing_ok=True)  # the study's attack replaces an earlier one (property.csv stays)
    write_attribute(run_dir, pd.concat(frames, ignore_index=True), None, command=" ".join(command))
    snapshots.write_text(stamp, json.dumps(current(), indent=1))
    return pd.read_csv(out / ATTRIBUTE_CSV, dtype={"attacker": str, "victim": str})


def calibrated_skipped(run_dir: Path) -> str:
    """Why the calibrated family cannot attack ``run_dir``, or "" where it can. A centralized run trains its own
    reference models; a federation's calibrated attacks are the curious controller's, whose references are the
    other learners' local models of the last round, so the run must have kept them."""
    target = open_run(run_dir)
    if is_centralized(target):
        return ""
    learners = learner_groups(target.partitions["group"])
    if len(learners) < MIN_CALIBRATION_LEARNERS:
        return (f"the curious controller's calibrated attacks need {MIN_CALIBRATION_LEARNERS} learners (a victim's "
                f"subjects need 2 other local models as references); this federation has {len(learners)}")
    missing = missing_local_models(target, target.rounds[-1])
    if len(missing) == len(learners):
        return ("the run kept no local models, which the curious controller's calibrated attacks use as references "
                "(train with --snapshot-local, or [federation] snapshot_local = true)")
    if missing:
        return f"round {target.rounds[-1]} has no local model of {', '.join(missing)}"
    return ""


def calibrated_cached(run_dir: Path, *, references: int = FAMILY_REFERENCES, repeats: int = DEFAULT_REPEATS,
                      say: Say, progress: Callable[[str, int, int], None] | None = None, seed: int = 0) -> pd.DataFrame:
    """The calibrated attacks on ``run_dir``, unless stamped as computed from the same snapshots and settings; their rows.

    A centralized run: ``python -m attacks.calibrated RUN_DIR --references N`` (LiRA online and offline, RMIA and the
    loss baseline on the best epoch, beside the round-0 control), written where that command writes; its reference
    models are cached by content (:mod:`attacks.membership.references`), so a rerun trains none. A federation: the
    curious controller's on the last round, plain and age-matched, ``repeats`` draws of the classifiers' splits
    (``attacks/calibrated-controller.csv``). A run :func:`calibrated_skipped` gives a reason for is refused.
    """
    why = calibrated_skipped(run_dir)
    if why:
        raise FedsimError(f"calibrated attacks cannot run on {str(run_dir)!r}: {why}")
    target = open_run(run_dir)
    centralized = is_centralized(target)
    out = run_dir / "attacks"
    results, stamp = out / (CALIBRATED_CSV if centralized else CONTROLLER_CSV), out / CALIBRATED_STAMP
    settings = {"version": CALIBRATED_VERSION, **({"references": references} if centralized else {"repeats": repeats})}

    def current() -> dict[str, Any]:
        """The membership stamp's snapshots and DONE, the family's settings and results, the local models it reads."""
        return {**stamp_of(run_dir, AttackSettings(), seed=seed), "settings": settings,
                "local_models": _local_models(run_dir), "results": _sha256(results)}
    if stamp.is_file() and json.loads(stamp.read_text()) == current():
        say(f"[dim]{run_dir.name}: calibrated attack results found in {results}[/]")
        return pd.read_csv(results)
    if centralized:
        say(f"[bold]{run_dir.name}[/]: python -m attacks.calibrated {run_dir} --references {references}")
        report = None if progress is None else (lambda done, total: progress("reference models", done, total))
        rows, scores, refs = run_calibrated(target, references=references, seed=seed, progress=report)
        say(f"references: {len(refs)} in {refs.folder} ({len(refs.trained)} trained now in {refs.seconds:.0f} s, "
            f"{len(refs) - len(refs.trained)} reused)")
        write_calibrated(run_dir, rows, scores, refs)
    else:
        rnd = target.rounds[-1]
        say(f"[bold]{run_dir.name}[/]: the curious controller's calibrated attacks on round {rnd} "
            "(references: the other learners' local models)")
        rows = [row for matched in (False, True)
                for row in controller_calibrated(target, rnd=rnd, repeats=repeats, seed=seed, age_matched=matched)]
        snapshots.atomic_write(results, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))
    snapshots.write_text(stamp, json.dumps(current(), indent=1))
    return pd.read_csv(results)


def attribute_row(env: str, table: pd.DataFrame) -> list[dict[str, Any]]:
    """Per question and seat of one run: its strongest feature set (by AUC on members) beside the label-only
    baseline, the untrained model and the member/unseen gap (rows of :func:`attacks.reporting.attribute.attribute_table`)."""
    rows = []
    for (question, seat), part in table[table["seat"] != NO_MODEL].groupby(["attribute", "seat"], sort=False):
        best = part.loc[part["auc"].idxmax()]
        rows.append({"environment": env, "question": question, "seat": seat, "features": best["features"],
                     "round": best["round"], "auc": best["auc"], "auc_low": best["auc_low"], "auc_high": best["auc_high"],
                     "label_only": best["baseline_auc"], "round0": best["round0_auc"], "unseen": best["unseen_auc"],
                     "image": best["image_auc"], "verdict": best["verdict"]})
    return rows


def environment_row(env: str, run_dir: Path, results: pd.DataFrame) -> dict[str, Any]:
    """Utility, memorisation and the strongest attack (by its age-matched control) of one run."""
    done = snapshots.read_done(run_dir)
    rnd = main_round(results)
    controls = controls_table(results, rnd)
    best = controls.loc[controls["matched"].fillna(controls["attack"]).idxmax()]
    members = done.get("members_mae", done.get("train_mae"))
    return {
        "environment": env, "model": snapshots.read_config(run_dir)["model"]["name"], "round": rnd,
        "unseen_mae": done.get("unseen_mae"), "members_mae": members,
        "gap": None if members is None else done["unseen_mae"] - members,
        "best_features": best["features"], "attack": best["attack"], "attack_low": best["attack_low"],
        "attack_high": best["attack_high"], "age_matched": best["matched"], "round0": best["round0"],
        "verdict": best["verdict"],
    }


def table1(results: Mapping[str, pd.DataFrame], models: Mapping[str, str]) -> pd.DataFrame:
    """Accuracy (%) of every Table 1 feature set (rows) in every setting (columns), main attack only,
    then the paper's column of every model that was attacked. Federated: mean over attacker × victim pairs."""
    rows = []
    for name, spec in TABLE1.items():
        row: dict[str, Any] = {"features": name}
        for env, res in results.items():
            main = res[(res["control"] == "none") & (res["round"] > 0) & (res["features"] == spec)]
            main = main[main["round"] == main["round"].max()]
            row[env] = 100 * summarise(main, ["features"])["accuracy"].iloc[0] if len(main) else float("nan")
        for model in dict.fromkeys(m for m in models.values() if m in PAPER_TABLE1):
            label, paper = paper_column(model)
            row[f"paper (centralized {label})"] = paper.get(name, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def pair_table(results: pd.DataFrame, spec: str, rnd: int) -> pd.DataFrame:
    """Attacker × victim cells "attack / age-matched control" (accuracy %) of one federated run."""
    attack, matched = (100 * pair_matrix(results, spec, rnd, control) for control in ("none", "age-matched"))
    cells = attack.combine(matched, lambda a, m: pd.Series(
        ["—" if pd.isna(x) else f"{x:.0f} / {y:.0f}" for x, y in zip(a, m)], index=a.index))
    return cells.reset_index().rename(columns={"attacker": "A ↓ B →"})

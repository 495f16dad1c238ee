"""Audit what users already have: a brain-age model fedsim did not train, as a run directory.

:func:`import_run` (``fedsim import``) turns a user's model — an importable ``package.module:Class`` or
factory with keyword arguments — its checkpoints (rounds or epochs) and a membership table (subject ->
``train``/``val``/``L1``…/``unseen``) into a run directory that every attack opens like one fedsim
trained: the same ``config.toml``, ``partitions.csv``, ``rounds/<k>/model.safetensors`` (+ learners'
local models where the user has them), ``metrics.jsonl`` and ``DONE``. The model is rebuilt through
the registry (:mod:`fedsim.models.imported`), so the attacks need no path of their own.

Checkpoints are read by :mod:`fedsim.checkpoints` (safetensors or state dicts, never unpickled). What the
model expects of its input (shape, intensity normalisation, a centre crop, the units of its output) is declared (:class:`ModelSpec`), checked on the cohort's first scan, and recorded in
``config.toml``. fedsim's own models import by name (``sfcn``): an SFCN checkpoint of the reference code
(Peng et al.'s layer names) is renamed on reading, and SFCN's age bins are read by SFCN itself.
:class:`fedsim.federation.recorder.RecordingStrategy` writes the same run directory from a Flower app.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from fedsim import snapshots
from fedsim.checkpoints import load_weights, read_weights
from fedsim.data.bids import is_bids, write_bids_manifest
from fedsim.data.cache import VolumeDataset, build_cache
from fedsim.data.manifest import file_sha256, load_manifest
from fedsim.data.partition import learner_groups
from fedsim.data.partition_table import partition_table, write_partitions
from fedsim.data.volumes import load_volume
from fedsim.device import resolve_device
from fedsim.errors import FedsimError
from fedsim.models import build_model
from fedsim.plots import plot_partitions
from fedsim.progress import Progress
from fedsim.provenance import PROVENANCE_TABLE, provenance
from fedsim.training import evaluate, make_loader, model_ages, own_output

__all__ = ["IMPORT_TABLE", "LOSSES", "OWN_LOSS", "ModelSpec", "check_on_scan", "import_run", "read_membership",
           "resolve_cohort", "resolved", "write_run_files"]

#: The table of ``config.toml`` that says where the weights came from (files and their SHA-256, or the recorder).
IMPORT_TABLE = "import"
#: The losses a regressor's error is scored with (``[train] loss``): what gradient features differentiate.
LOSSES = ("mse", "l1")
#: ``[train] loss`` of a model with a loss of its own (SFCN's KL to soft labels), as fedsim's SFCN runs record it.
OWN_LOSS = "kl"
#: Groups of a membership table besides the learners ``L1``…``LK``.
GROUPS = ("train", "val", "unseen")
COHORT_SUBSET = "cohort.csv"  # the manifest's rows the membership table names, when it names fewer
_LEARNER = re.compile(r"L[1-9][0-9]*")
PLAUSIBLE = 30.0  # years: a trained model's age of the first scan lies within this of the cohort's ages


@dataclass(frozen=True)
class ModelSpec:
    """A user's model and what it expects: everything fedsim needs to rebuild it and to feed it.

    Parameters
    ----------
    factory : str
        ``package.module:Class`` or a factory function; importable wherever the run is attacked. Or one of
        fedsim's models by name (``sfcn``), which keeps its own layers, loss and reading of its output.
    shape : tuple of int
        The volume (D, H, W) it was trained on; fedsim resamples every scan of the cohort to it.
    kwargs : mapping (default: {})
        Keyword arguments of ``factory``: plain values, recorded in the run directory.
    intensity : str (default: "zscore")
        Per-scan normalisation it was trained with (:data:`fedsim.models.imported.INTENSITIES`).
    output_scale, output_offset : float (default: 1.0, 0.0)
        Its output in years is ``output_offset + output_scale * output``: a model trained on z-scored ages
        declares their standard deviation and mean. A model with an output of its own
        (:class:`fedsim.training.OwnOutput`: SFCN's age bins) reads its ages itself and refuses them.
    layers : mapping or None (default: None)
        Role (``conv1``, ``conv6``, ``output``) -> its own layer name, for the white-box attacks; unset
        roles are found from the module (first conv, last hidden layer, output).
    crop : tuple of int or None (default: None)
        The centre of each normalised ``shape`` volume that the model takes (SFCN's reference code: 160x192x160
        of the 1 mm grid, 182x218x182); default: the whole volume.
    """

    factory: str
    shape: tuple[int, int, int]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    intensity: str = "zscore"
    output_scale: float = 1.0
    output_offset: float = 0.0
    layers: Mapping[str, str] | None = None
    crop: tuple[int, int, int] | None = None

    def model_kwargs(self, layers: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The ``[model]`` table of ``config.toml`` and every snapshot header (without ``name``)."""
        out = {"factory": str(self.factory), "in_shape": [int(s) for s in self.shape], "kwargs": dict(self.kwargs),
               "intensity": self.intensity, "target_scale": float(self.output_scale),
               "age_offset": float(self.output_offset)}
        layers = self.layers if layers is None else layers
        if layers is not None:
            out["layers"] = dict(layers)
        if self.crop is not None:
            out["crop"] = [int(s) for s in self.crop]
        return out

    def build(self) -> nn.Module:
        """The model, freshly initialised, through the registry (as the attacks rebuild it)."""
        kwargs = self.model_kwargs()
        kwargs["in_shape"] = tuple(kwargs["in_shape"])
        return build_model("imported", **kwargs)


def resolved(spec: ModelSpec, model: nn.Module) -> ModelSpec:
    """``spec`` with every layer role spelt out as ``model`` found it, so the run records them all."""
    roles = {role: path for role, path in model.fedsim_layers.items() if role in ("conv1", "conv6", "output")}
    return dataclasses.replace(spec, layers=roles)


def check_on_scan(model: nn.Module, volume: np.ndarray, where: str) -> float:
    """The age ``model`` predicts for one preprocessed scan; a model that cannot take it is a one-line error."""
    x = torch.from_numpy(np.asarray(volume, dtype=np.float32))[None, None]
    try:
        with torch.no_grad():
            age = float(model_ages(model, model.eval()(x))[0])
    except FedsimError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's forward: report it in one line
        reason = " ".join(str(err).split())[:300]
        raise FedsimError(f"{getattr(model, 'fedsim_factory', type(model).__name__)} fails on {where} at shape "
                          f"{tuple(volume.shape)} ({type(err).__name__}: {reason}); declare the shape it was trained on") from None
    if not np.isfinite(age):
        raise FedsimError(f"{getattr(model, 'fedsim_factory', type(model).__name__)} predicts {age} for {where}")
    return age


def read_membership(table: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Who trained on whom: ``subject_id, group`` with groups ``train`` (+ ``val``) for one model or
    ``L1``…``LK`` for a federation's learners, and ``unseen`` for subjects no model trained on.

    Raises
    ------
    FedsimError
        One line naming the row: a missing column, an unknown group, a repeated subject, a table that mixes
        ``train`` with learners, learners that are not ``L1``…``LK``, no member or no unseen subject.
    """
    where = "the membership table" if isinstance(table, pd.DataFrame) else f"membership table {str(table)!r}"
    if isinstance(table, pd.DataFrame):
        df = table.copy()
    else:
        try:
            df = pd.read_csv(table, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise FedsimError(f"{where} not found") from None
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise FedsimError(f"{where} is not a readable CSV with columns subject_id,group ({err})") from None
    missing = [c for c in ("subject_id", "group") if c not in df.columns]
    if missing:
        raise FedsimError(f"{where} lacks column(s) {', '.join(missing)}; expected a header subject_id,group")
    df = pd.DataFrame({"subject_id": df["subject_id"].astype(str).str.strip(), "group": df["group"].astype(str).str.strip()})
    for i, (sid, group) in enumerate(zip(df["subject_id"], df["group"])):
        if group not in GROUPS and not _LEARNER.fullmatch(group):
            raise FedsimError(f"{where} line {i + 2} (subject {sid!r}): group {group!r} is not one of "
                              f"{', '.join(GROUPS)} or a learner L1, L2, …")
    repeated = df["subject_id"][df["subject_id"].duplicated()]
    if len(repeated):
        raise FedsimError(f"{where}: subject {repeated.iloc[0]!r} appears more than once; give every subject one group")
    groups = set(df["group"])
    learners = learner_groups(groups)
    if learners and groups & {"train", "val"}:
        raise FedsimError(f"{where} mixes 'train' (one model) with learners ({', '.join(learners)}); a run is one or the other")
    if learners != [f"L{k}" for k in range(1, len(learners) + 1)]:
        raise FedsimError(f"{where}: learners must be L1…L{len(learners)} without gaps, got {', '.join(learners)}")
    if not learners and "train" not in groups:
        raise FedsimError(f"{where} has no members: give the subjects the model trained on group 'train' (or L1, L2, …)")
    if "unseen" not in groups:
        raise FedsimError(f"{where} has no 'unseen' subject: the attacks draw their non-members from subjects no "
                          "model trained on")
    return df.reset_index(drop=True)


def resolve_cohort(cohort: str | Path, membership: pd.DataFrame, run_dir: Path) -> tuple[Path, pd.DataFrame]:
    """The manifest of the run: the user's (or the one written for a BIDS dataset), narrowed to the subjects
    of the membership table (written as ``cohort.csv`` in the run) when it has more."""
    cohort = Path(cohort)
    if cohort.is_dir():
        if not is_bids(cohort):
            raise FedsimError(f"cohort {str(cohort)!r} is a directory without dataset_description.json: "
                              "give a BIDS dataset or a manifest.csv")
        cohort = write_bids_manifest(cohort).path
    manifest = load_manifest(cohort)
    known = set(manifest["subject_id"])
    strangers = [s for s in membership["subject_id"] if s not in known]
    if strangers:
        raise FedsimError(f"the membership table names {len(strangers)} subject(s) the cohort {str(cohort)!r} lacks, "
                          f"first {strangers[0]!r}")
    named = set(membership["subject_id"])
    if len(named) == len(manifest):
        return cohort.resolve(), manifest
    subset = manifest[manifest["subject_id"].isin(named)]
    path = run_dir / COHORT_SUBSET
    snapshots.write_text(path, subset.to_csv(index=False))
    return path.resolve(), load_manifest(path)


def write_run_files(
    run_dir: Path, *, spec: ModelSpec, manifest_path: Path, manifest: pd.DataFrame, membership: pd.DataFrame,
    name: str, description: str, seed: int, loss: str, imported: Mapping[str, Any], rounds: int | None = None,
    local_models: bool = False, age_bins: int = 20, source: str = "fedsim import",
) -> pd.DataFrame:
    """``config.toml``, ``partitions.csv`` and its figure, as fedsim's own runs write them; returns the partitions.

    ``[train]`` holds only the loss: fedsim does not know how the model was trained, so the attacks that retrain
    or replay training (reference models, property inference, gradient inversion) skip such a run, saying why."""
    if loss not in (*LOSSES, OWN_LOSS):
        raise FedsimError(f"loss {loss!r} is not one of {', '.join(LOSSES)} (the loss the model was trained with)")
    group_of = dict(zip(membership["subject_id"], membership["group"]))
    ids = [s for s in manifest["subject_id"] if s in group_of]
    ages = manifest.set_index("subject_id").loc[ids, "age"].to_numpy(dtype=float)
    partitions = partition_table(ids, ages, np.array([group_of[s] for s in ids]), age_bins)
    learners = learner_groups(partitions["group"])
    config: dict[str, Any] = {
        "name": name, "description": description, "seed": int(seed), "source": f"{source} ({spec.factory})",
        "cohort": {"manifest": str(manifest_path)},
        "data": {"shape": [int(s) for s in spec.shape], "cache_dtype": "float32"},
        "partition": {"learners": len(learners), "unseen_fraction": float((partitions["group"] == "unseen").mean()),
                      "age_bins": age_bins},
        "model": {"name": "imported", **spec.model_kwargs()},
        "train": {"loss": loss},
    }
    if learners:
        config["federation"] = {"rounds": int(rounds or 0), "snapshot_local": bool(local_models)}
    config[IMPORT_TABLE] = dict(imported)
    config[PROVENANCE_TABLE] = provenance()
    snapshots.write_config(run_dir, config)
    write_partitions(partitions, run_dir / snapshots.PARTITIONS_FILE)
    plot_partitions(partitions, run_dir / "partitions.png")
    return partitions


def _rounds(checkpoints: Sequence[str | Path] | Mapping[int, str | Path]) -> dict[int, Path]:
    if isinstance(checkpoints, Mapping):
        rounds = {int(r): Path(p) for r, p in checkpoints.items()}
    else:
        rounds = {r: Path(p) for r, p in enumerate(checkpoints, start=1)}
    if not rounds:
        raise FedsimError("give at least one checkpoint of the trained model")
    if min(rounds) < 0:
        raise FedsimError(f"round numbers are 0 (the initial model) or more, got {min(rounds)}")
    return dict(sorted(rounds.items()))


def import_run(
    out: str | Path | None, *, model: ModelSpec, checkpoints: Sequence[str | Path] | Mapping[int, str | Path],
    cohort: str | Path, membership: str | Path | pd.DataFrame,
    local: Mapping[tuple[int, str], str | Path] | None = None, loss: str | None = None, name: str | None = None,
    seed: int = 0, progress: Progress | None = None,
) -> Path:
    """Write the run directory of a model fedsim did not train; every attack then opens it as its own.

    Parameters
    ----------
    out : path or None
        The run directory (default ``runs/<name>-<timestamp>``); one holding a finished run is refused.
    model : ModelSpec
        The user's model and what it expects.
    checkpoints : list or mapping
        The community (or centralized) model's weights: a list is rounds (epochs) 1, 2, …; a mapping gives
        round -> file. Round 0 is the untrained model, the attacks' control: without a file for it, a fresh
        ``factory(**kwargs)`` initialised with ``seed`` stands in (recorded as such).
    cohort : path
        A manifest CSV (``subject_id,path,age`` + ``sex``, ``site``…) or a BIDS dataset, as for training.
    membership : path or DataFrame
        ``subject_id,group`` (:func:`read_membership`).
    local : mapping (default: None)
        ``(round, learner) -> file``: a federation's local models where the user has them (the curious
        controller's seat).
    loss : str or None (default: None, meaning "mse")
        The loss the model was trained with (``mse`` or ``l1``), which the gradient features differentiate. A
        model with a loss of its own (:class:`fedsim.training.OwnOutput`: SFCN) is attacked with that one,
        recorded as ``kl``, and refuses another.
    """
    rounds = _rounds(checkpoints)
    local = {(int(r), str(g)): Path(p) for (r, g), p in (local or {}).items()}
    members = read_membership(membership)
    learners = learner_groups(members["group"])
    for (rnd, learner), path in local.items():
        if learner not in learners:
            raise FedsimError(f"local model {str(path)!r} is of {learner}, but the membership table's learners are "
                              f"{', '.join(learners) or 'none (one model, group train)'}")
        if rnd not in rounds or rnd == 0:
            raise FedsimError(f"local model {str(path)!r} is of round {rnd}, which has no community checkpoint "
                              f"(rounds: {', '.join(map(str, rounds))})")
    name = name or f"imported-{Path(str(model.factory).rpartition(':')[2] or 'model').stem.lower()}"
    with snapshots.new_run_dir(None if out is None else Path(out), name) as run_dir:
        manifest_path, manifest = resolve_cohort(cohort, members, run_dir)
        net = model.build()
        spec = resolved(model, net)
        if own_output(net) is not None and loss is not None:
            raise FedsimError(f"{model.factory} trains with its own loss ({type(net).__name__}.output_loss), which the "
                              f"attacks differentiate: drop --loss (got {loss!r})")
        loss = OWN_LOSS if own_output(net) is not None else loss or "mse"
        first = manifest.iloc[0]
        where = f"subject {first['subject_id']!r}"
        scan = load_volume(first["path"], tuple(model.shape), where=where)
        check_on_scan(net, scan, where)  # the declared shape and normalisation, before any weights are read
        read = {r: read_weights(net, p) for r, p in rounds.items()}
        states = {r: state for r, (state, _) in read.items()}
        renamed = {rounds[r] for r, (_, was) in read.items() if was}
        read_local = {key: read_weights(net, p) for key, p in local.items()}
        locals_ = {key: state for key, (state, _) in read_local.items()}
        renamed |= {local[key] for key, (_, was) in read_local.items() if was}
        for r, state in states.items():
            load_weights(net, state, f"checkpoint {str(rounds[r])!r}")
        for key, state in locals_.items():
            load_weights(net, state, f"checkpoint {str(local[key])!r}")
        if 0 not in states:
            with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
                torch.manual_seed(seed)
                states = {0: model.build().state_dict(), **states}
        last = max(states)
        net.load_state_dict(states[last])
        age, (young, old) = check_on_scan(net, scan, where), (manifest["age"].min(), manifest["age"].max())
        if not young - PLAUSIBLE < age < old + PLAUSIBLE:  # a trained model's age of a scan of this cohort
            units = ("its age bins" if own_output(net) is not None else
                     "the output's units (age = output_offset + output_scale * output: a model trained on z-scored "
                     "ages declares their mean and standard deviation)")
            raise FedsimError(f"the model of round {last} predicts {age:.1f} years for {where} of a cohort aged "
                              f"{young:g}-{old:g}: check the declared shape, crop and intensity, and {units}")

        def entry(path: Path) -> dict[str, Any]:
            names = {"names": "reference SFCN, renamed by from_reference_state_dict"} if path in renamed else {}
            return {"path": str(path.resolve()), "sha256": file_sha256(path), **names}

        record = {"checkpoints": [{"round": r, **entry(p)} for r, p in rounds.items()],
                  "initial": str(rounds[0].resolve()) if 0 in rounds else f"a fresh {model.factory} (seed {seed})"}
        if local:
            record["local"] = [{"round": r, "learner": g, **entry(p)} for (r, g), p in sorted(local.items())]
        partitions = write_run_files(
            run_dir, spec=spec, manifest_path=manifest_path, manifest=manifest, membership=members, name=name,
            description=f"{model.factory} imported from {len(rounds)} checkpoint(s)", seed=seed, loss=loss,
            imported=record, rounds=last, local_models=bool(local))
        cohort_array = build_cache(manifest, tuple(model.shape), progress=progress)
        groups = {g: cohort_array.index_of(partitions.loc[partitions["group"] == g, "subject_id"].tolist())
                  for g in partitions["group"].unique()}
        counts = {g: len(rows) for g, rows in groups.items()}
        architecture = ("imported", spec.model_kwargs())
        device = resolve_device()
        net = net.to(device)

        def mae(rows: np.ndarray) -> Any:
            return evaluate(net, make_loader(VolumeDataset(cohort_array, rows), 16, shuffle=False, device=device), device)

        for r, state in states.items():
            net.load_state_dict(state)
            unseen = mae(groups["unseen"])
            metrics = {"round": r, "seconds": 0.0, **unseen.as_dict("unseen")}
            snapshots.append_metrics(run_dir, metrics)
            for (rnd, learner), local_state in locals_.items():
                if rnd == r:
                    snapshots.save_round(run_dir, r, local_state, {}, name=learner, architecture=architecture)
            source = record["initial"] if r not in rounds else str(rounds[r].resolve())
            snapshots.save_round(run_dir, r, state, {"env": name, "sample_counts": counts, "metrics": metrics,
                                                     "imported_from": source}, architecture=architecture)
        net.load_state_dict(states[last])
        member_groups = [g for g in groups if g != "unseen"]
        member_rows = np.concatenate([groups[g] for g in member_groups])
        members_mae, unseen_mae = mae(member_rows).mae, mae(groups["unseen"]).mae
        ages = cohort_array.ages
        snapshots.mark_done(run_dir, {
            "final_round": last, "members_mae": members_mae, "unseen_mae": unseen_mae,
            "memorisation_gap": unseen_mae - members_mae,
            "predict_mean_mae": float(np.abs(ages[groups["unseen"]] - ages[member_rows].mean()).mean()),
            "imported": True})
    return run_dir

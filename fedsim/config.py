"""Environment files (``environments/*.toml``) → typed, validated configuration.

Configuration is data: every paper setting lives in a TOML file, and this module only checks
it once, at load, so a typo fails in one line that names the file, the key and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.data.partitioners import PARTITIONERS
from fedsim.errors import FedsimError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (a dependency there); other modules import it from here
    import tomli as tomllib

ENVIRONMENTS_DIR = Path(__file__).resolve().parent.parent / "environments"


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _non_negative(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def _int_at_least(n: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= n


def _fraction(v: Any) -> bool:
    return _non_negative(v) and v < 1


def _shape(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 3 and all(_int_at_least(4)(s) for s in v)


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and len(v) >= 1 and all(_int_at_least(1)(s) for s in v)


def _weights(v: Any) -> bool:
    return v is None or (isinstance(v, list) and len(v) >= 1 and all(_positive(w) for w in v))


def _matrix(v: Any) -> bool:
    return v is None or (
        isinstance(v, list) and len(v) >= 1 and all(isinstance(r, list) and all(_non_negative(w) for w in r) for r in v)
    )


def _age_range(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_non_negative(a) for a in v) and v[0] < v[1]


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _one_of(*options: str):
    check = lambda v: v in options  # noqa: E731
    check.options = options  # type: ignore[attr-defined]
    return check


def _spec(check, expected: str, default: Any = dataclasses.MISSING) -> Any:
    """A dataclass field carrying its validator and a phrase for the error message."""
    kw = {} if default is dataclasses.MISSING else {"default": default}
    return field(metadata={"check": check, "expected": expected}, **kw)


@dataclass(frozen=True)
class CohortConfig:
    """The embedded synthetic cohort, generated once and reused (ignored with ``--cohort``)."""

    subjects: int = _spec(_int_at_least(8), "an integer of at least 8")
    shape: list[int] = _spec(_shape, "three integers of at least 4, e.g. [36, 43, 36]")
    seed: int = _spec(_int_at_least(0), "a non-negative integer", 0)
    # What sex and site do to a scan beyond head size (fedsim.data.synthetic); the defaults are the cohort
    # of the membership results, the attribute study's environments switch them on.
    sex_gm_difference: float = _spec(_fraction, "a number in [0, 1): women's grey-matter excess over men's", 0.0)
    male_atrophy_ratio: float = _spec(_positive, "a positive number: men's atrophy per year relative to women's", 1.0)
    sites: int = _spec(_int_at_least(1), "a positive integer: scanners, each with its own signature and age/sex mix", 1)
    # Ages drawn over another range (the default histogram's shape, stretched over it): a public cohort of other ages
    age_range: list[float] | None = _spec(_optional(_age_range), "two ages [lo, hi] in years with lo < hi, e.g. [45, 62]",
                                          None)


@dataclass(frozen=True)
class DataConfig:
    """Model input: volumes are resampled to ``shape`` and z-scored per scan."""

    shape: list[int] = _spec(_shape, "three integers of at least 4, e.g. [36, 43, 36]")
    cache_dtype: str = _spec(_one_of("float32", "float16"), "'float32' or 'float16' (half the disk and I/O)", "float32")
    workers: int = _spec(_int_at_least(0), "a non-negative integer (0: one per CPU core, at most 16)", 0)


@dataclass(frozen=True)
class PartitionConfig:
    """Who holds which subjects (Stripelis et al. 2021); weights are relative and normalised on load."""

    learners: int = _spec(_int_at_least(0), "a non-negative integer (0 = centralized)")
    unseen_fraction: float = _spec(lambda v: _positive(v) and v < 1, "a number in (0, 1)")
    age_bins: int = _spec(_int_at_least(1), "a positive integer", 20)
    val_fraction: float = _spec(_fraction, "a number in [0, 1)", 0.0)
    learner_weights: list[float] | None = _spec(_weights, "a list of positive numbers, one per learner", None)
    age_bin_weights: list[list[float]] | None = _spec(
        _matrix, "a list of per-learner lists of non-negative numbers, one per age bin", None
    )
    by: str = _spec(_one_of(*PARTITIONERS), f"one of {', '.join(PARTITIONERS)} (fedsim.data.partitioners)", "paper")
    alpha: float | None = _spec(lambda v: v is None or _positive(v), "a positive number (Dirichlet concentration)", None)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture by registry name; the remaining keys go to its constructor."""

    name: str = _spec(lambda v: isinstance(v, str) and bool(v), "a model name such as 'cnn3d'")
    channels: list[int] = _spec(_int_list, "a list of positive integers, one per block")
    head_channels: int = _spec(_int_at_least(1), "a positive integer")
    dropout: float = _spec(_fraction, "a number in [0, 1)", 0.0)
    target_scale: float = _spec(_positive, "a positive number (years per output unit)", 1.0)
    # Age bins of a model that classifies them (sfcn); unset keys keep the model's defaults (Peng et al.'s).
    age_range: list[float] | None = _spec(_optional(_age_range), "two ages [lo, hi] in years with lo < hi, e.g. [42, 82]", None)
    bin_step: float | None = _spec(_optional(_positive), "a positive number of years (the width of an age bin)", None)
    label_sigma: float | None = _spec(_optional(_positive), "a positive number of years (the soft label's std)", None)


@dataclass(frozen=True)
class TrainConfig:
    """Local training: the same loop serves centralized and federated learners."""

    loss: str = _spec(_one_of("mse", "l1", "kl"), "one of 'mse', 'l1' (regressors), 'kl' (sfcn's age bins)")
    optimizer: str = _spec(_one_of("adam", "sgd"), "one of 'adam', 'sgd'")
    lr: float = _spec(_positive, "a positive number")
    batch_size: int = _spec(_int_at_least(1), "a positive integer")
    weight_decay: float = _spec(_non_negative, "a non-negative number", 0.0)
    momentum: float = _spec(_fraction, "a number in [0, 1)", 0.0)
    epochs: int = _spec(_int_at_least(1), "a positive integer", 1)
    precision: str = _spec(_one_of("fp32", "bf16"), "'fp32' or 'bf16' (bfloat16 autocast of the forward pass)", "fp32")
    init: str | None = _spec(_optional(lambda v: isinstance(v, str) and v.strip() != ""),
                             "a run directory or a .safetensors snapshot to start from (e.g. a model trained on public "
                             "data; fedsim.pretrained)", None)


@dataclass(frozen=True)
class FederationConfig:
    """Synchronous FedAvg rounds."""

    rounds: int = _spec(_int_at_least(1), "a positive integer")
    local_epochs: int = _spec(_int_at_least(1), "a positive integer")
    snapshot_local: bool = _spec(lambda v: isinstance(v, bool), "true or false", False)
    max_failures: int = _spec(_int_at_least(0), "a non-negative integer (0 = stop at the first failure)", 0)
    round_timeout: float = _spec(_positive, "a positive number of seconds", 3600.0)


@dataclass(frozen=True)
class DefenseConfig:
    """Privacy defenses (``fedsim.defenses``), each a wrapper around training; all off by default.

    DP-SGD is on when ``dp_noise_multiplier`` is set, Flower's central DP when ``central_dp`` is;
    a noise scale of 0 (or a patience of 0) leaves the other defenses off.
    """

    dp_noise_multiplier: float | None = _spec(
        _optional(_positive), "a positive number (Opacus DP-SGD noise, in units of dp_max_grad_norm)", None)
    dp_max_grad_norm: float | None = _spec(_optional(_positive), "a positive number (per-sample gradient clip)", None)
    dp_delta: float = _spec(lambda v: _positive(v) and v < 1, "a number in (0, 1), e.g. 1e-5", 1e-5)
    central_dp: str | None = _spec(
        _optional(_one_of("server", "client")), "one of 'server', 'client' (who clips the learners' updates)", None)
    central_noise_multiplier: float | None = _spec(
        _optional(_positive), "a positive number (noise std over central_clipping_norm / learners)", None)
    central_clipping_norm: float | None = _spec(
        _optional(_positive), "a positive number (L2 bound of a learner's update)", None)
    label_noise: float = _spec(_non_negative, "a non-negative number of years (std)", 0.0)
    prediction_noise: float = _spec(_non_negative, "a non-negative number of years (std)", 0.0)
    model_noise: float = _spec(_non_negative, "a non-negative number (std added to every shared weight)", 0.0)
    early_stopping_patience: int = _spec(_int_at_least(0), "a non-negative integer of epochs (0 = off)", 0)

    @property
    def dp_sgd(self) -> bool:
        """Whether learners (or the centralized trainer) train with Opacus DP-SGD."""
        return self.dp_noise_multiplier is not None


@dataclass(frozen=True)
class AttackConfig:
    """A *simulated* active malicious learner (Nasr et al. 2019; FederatedScope's GradAscent), off by default.

    Learner ``L<learner>`` trains as usual, then ascends the loss on ``targets`` scans drawn by seed,
    half from the other learners' subjects and half from the unseen set (it knows the scans and ages,
    not which half is which), in ``ascent_rounds`` rounds from ``from_round``. The ascent's norm is
    ``ascent_scale`` times that of the attacker's normal update, so the community model still trains
    (:mod:`fedsim.federation.malicious`).
    """

    active: bool = _spec(lambda v: isinstance(v, bool), "true or false", False)
    learner: int = _spec(_int_at_least(1), "a positive integer k: learner Lk is the attacker", 1)
    targets: int = _spec(lambda v: _int_at_least(2)(v) and v % 2 == 0,
                         "an even integer of at least 2 (half members, half non-members)", 20)
    ascent_steps: int = _spec(_int_at_least(1), "a positive integer (ascent steps per round)", 10)
    ascent_scale: float = _spec(_positive, "a positive number (the ascent's norm over the normal update's)", 5.0)
    from_round: int = _spec(_int_at_least(1), "a positive integer (the first round with an ascent)", 1)
    ascent_rounds: int = _spec(_int_at_least(1), "a positive integer (consecutive rounds with an ascent)", 1)


@dataclass(frozen=True)
class EnvConfig:
    """One environment file, validated."""

    name: str
    path: Path
    description: str
    seed: int
    cohort: CohortConfig
    data: DataConfig
    partition: PartitionConfig
    model: ModelConfig
    train: TrainConfig
    federation: FederationConfig | None = None
    defense: DefenseConfig | None = None
    attack: AttackConfig | None = None

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of the model (everything set in [model] but its name, plus the input shape)."""
        kwargs = {k: v for k, v in dataclasses.asdict(self.model).items() if k != "name" and v is not None}
        return {"in_shape": tuple(self.data.shape), **kwargs}

    def to_dict(self, *, manifest: Path | None = None) -> dict[str, Any]:
        """The resolved configuration as plain TOML data: what a run dir's ``config.toml`` holds.

        ``manifest`` records which cohort was actually used (the user's or the synthetic one).
        """
        out: dict[str, Any] = {"name": self.name, "description": self.description, "seed": self.seed,
                               "source": str(self.path)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                out[f.name] = {k: v for k, v in dataclasses.asdict(value).items() if v is not None}
        if manifest is not None:
            out["cohort"]["manifest"] = str(Path(manifest).resolve())
        if self.train.init is not None:  # a run's config names the same file wherever it is read from
            out["train"]["init"] = str(Path(self.train.init).resolve())
        out["model"]["in_shape"] = list(self.data.shape)
        return out


_SECTIONS: dict[str, type] = {
    "cohort": CohortConfig,
    "data": DataConfig,
    "partition": PartitionConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "federation": FederationConfig,
    "defense": DefenseConfig,
    "attack": AttackConfig,
}
_OPTIONAL_SECTIONS = {"federation", "defense", "attack"}


def _section(where: str, section: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise FedsimError(f"{where}: [{section}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise FedsimError(
            f"{where}: unknown key {unknown[0]!r} in [{section}]; allowed keys: {', '.join(fields)}"
        )
    values = {}
    for name, f in fields.items():
        if name not in raw:
            if f.default is dataclasses.MISSING:
                raise FedsimError(f"{where}: [{section}] lacks {name!r}, which must be {f.metadata['expected']}")
            continue
        if not f.metadata["check"](raw[name]):
            raise FedsimError(
                f"{where}: [{section}] {name} must be {f.metadata['expected']}, got {raw[name]!r}"
            )
        values[name] = raw[name]
    return cls(**values)


def _cross_checks(where: str, cfg: EnvConfig) -> None:
    p = cfg.partition
    if p.learner_weights is not None and p.age_bin_weights is not None:
        raise FedsimError(
            f"{where}: [partition] give learner_weights (IID) or age_bin_weights (non-IID), not both"
        )
    for key, rows in (("learner_weights", p.learner_weights), ("age_bin_weights", p.age_bin_weights)):
        if rows is not None and len(rows) != p.learners:
            raise FedsimError(f"{where}: [partition] {key} has {len(rows)} entries but learners = {p.learners}")
    if p.age_bin_weights is not None:
        for i, row in enumerate(p.age_bin_weights, start=1):
            if len(row) != p.age_bins:
                raise FedsimError(
                    f"{where}: [partition] age_bin_weights row {i} has {len(row)} bins but age_bins = {p.age_bins}"
                )
            if sum(row) <= 0:
                raise FedsimError(f"{where}: [partition] age_bin_weights row {i} sums to 0; every learner needs subjects")
    if p.by != "paper" and (p.learner_weights is not None or p.age_bin_weights is not None):
        raise FedsimError(f"{where}: [partition] learner_weights and age_bin_weights belong to by = \"paper\", not {p.by!r}")
    if (p.by == "dirichlet") != (p.alpha is not None):
        raise FedsimError(f"{where}: [partition] alpha goes with by = \"dirichlet\" (and it needs one, e.g. alpha = 0.5)")
    if p.by != "paper" and p.learners == 0:
        raise FedsimError(f"{where}: [partition] by = {p.by!r} splits among learners; a centralized environment has none")
    if p.learners == 0 and p.val_fraction == 0:
        raise FedsimError(f"{where}: [partition] a centralized environment (learners = 0) needs val_fraction > 0")
    if (cfg.model.name == "sfcn") != (cfg.train.loss == "kl"):
        raise FedsimError(
            f"{where}: [train] loss = 'kl' goes with [model] name = 'sfcn' (its age bins) and only with it; "
            f"got loss = {cfg.train.loss!r} for model {cfg.model.name!r}"
        )
    bins = [k for k in ("age_range", "bin_step", "label_sigma") if getattr(cfg.model, k) is not None]
    if bins and cfg.model.name != "sfcn":
        raise FedsimError(f"{where}: [model] {bins[0]} belongs to model 'sfcn' (age bins), not {cfg.model.name!r}")
    if p.learners > 0 and cfg.federation is None:
        raise FedsimError(f"{where}: a federated environment (learners = {p.learners}) needs a [federation] table")
    if cfg.defense is not None:
        _defense_checks(where, cfg)
    if cfg.attack is not None and cfg.attack.active:
        _attack_checks(where, cfg)


def _defense_checks(where: str, cfg: EnvConfig) -> None:
    d, federated = cfg.defense, cfg.partition.learners > 0
    if (d.dp_noise_multiplier is None) != (d.dp_max_grad_norm is None):
        raise FedsimError(f"{where}: [defense] DP-SGD needs both dp_noise_multiplier and dp_max_grad_norm")
    if d.dp_sgd and cfg.train.precision != "fp32":
        raise FedsimError(f"{where}: [defense] DP-SGD clips per-sample gradients in float32; use [train] precision = \"fp32\"")
    if d.dp_sgd and cfg.model.name != "cnn3d":
        why = ("normalises with BatchNorm, which mixes the subjects of a batch" if cfg.model.name == "sfcn"
               else "folds slices into the batch")
        raise FedsimError(
            f"{where}: [defense] DP-SGD needs per-subject gradients, but model {cfg.model.name!r} {why}; use model name 'cnn3d'"
        )
    central = ("central_noise_multiplier", "central_clipping_norm")
    if d.central_dp is None and any(getattr(d, k) is not None for k in central):
        raise FedsimError(f"{where}: [defense] {' and '.join(central)} need central_dp = 'server' or 'client'")
    if d.central_dp is not None:
        missing = [k for k in central if getattr(d, k) is None]
        if missing:
            raise FedsimError(f"{where}: [defense] central_dp = {d.central_dp!r} needs {' and '.join(missing)}")
        if not federated:
            raise FedsimError(f"{where}: [defense] central_dp needs learners; this environment is centralized")
    if d.early_stopping_patience and federated:
        raise FedsimError(
            f"{where}: [defense] early_stopping_patience needs a validation set, which only centralized "
            "environments have; use fewer [federation] rounds instead"
        )


def _attack_checks(where: str, cfg: EnvConfig) -> None:
    a, learners = cfg.attack, cfg.partition.learners
    if learners < 2:
        raise FedsimError(f"{where}: [attack] active needs at least 2 learners (an attacker and a victim), got {learners}")
    if a.learner > learners:
        raise FedsimError(f"{where}: [attack] learner = {a.learner} but there are {learners} learners (L1..L{learners})")
    if cfg.defense is not None and cfg.defense.dp_sgd:
        raise FedsimError(f"{where}: [attack] active is not simulated beside DP-SGD learners; drop [defense] dp_noise_multiplier")


def available_environments(directory: Path = ENVIRONMENTS_DIR) -> list[str]:
    """Names of the environment files shipped with fedsim."""
    return sorted(p.stem for p in directory.glob("*.toml"))


def env_path(name_or_path: str | Path) -> Path:
    """Resolve ``skewed-noniid`` or ``path/to/file.toml`` to an existing file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise FedsimError(f"environment file {str(candidate)!r} not found")
        return candidate
    path = ENVIRONMENTS_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise FedsimError(
            f"unknown environment {str(name_or_path)!r}; choose one of: {', '.join(available_environments())}"
            " (or give a path to a .toml file)"
        )
    return path


def _from_raw(where: str, raw: dict[str, Any], *, name: str, path: Path) -> EnvConfig:
    top = {"description", "seed", *_SECTIONS}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise FedsimError(f"{where}: unknown key or table {unknown[0]!r}; allowed: {', '.join(sorted(top))}")
    seed = raw.get("seed", 0)
    if not _int_at_least(0)(seed):
        raise FedsimError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    sections = {}
    for section, cls in _SECTIONS.items():
        if section not in raw:
            if section in _OPTIONAL_SECTIONS:
                continue
            raise FedsimError(f"{where}: missing table [{section}]")
        sections[section] = _section(where, section, cls, raw[section])
    cfg = EnvConfig(
        name=name, path=path, description=str(raw.get("description", "")), seed=seed, **sections
    )
    _cross_checks(where, cfg)
    return cfg


def load_env(name_or_path: str | Path) -> EnvConfig:
    """Load and validate an environment by name (``environments/<name>.toml``) or path."""
    path = env_path(name_or_path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise FedsimError(f"{where}: not valid TOML ({err})") from None
    return _from_raw(where, raw, name=path.stem, path=path)


# Keys that EnvConfig.to_dict (and the launcher) add to a run's config.toml; no environment file has them.
_RESOLVED_ONLY = {"": ("name", "source", "run", "provenance"), "cohort": ("manifest",), "model": ("in_shape",)}


def from_resolved(raw: dict[str, Any], *, where: str = "config.toml") -> EnvConfig:
    """Rebuild the :class:`EnvConfig` of a run from its ``config.toml`` (``EnvConfig.to_dict``).

    It is validated like an environment file, so learners and resumed runs train with exactly
    the configuration the run started with, even if the environment file changed since.
    """
    if "name" not in raw:
        raise FedsimError(f"{where}: lacks 'name'; it was not written by fedsim")
    if raw.get("model", {}).get("name") == "imported":  # fedsim.importing: a model fedsim did not train
        raise FedsimError(f"{where}: the run imports {raw['model'].get('factory', 'a model')}, which fedsim did not "
                          "train: it has no environment to train it again or replay its training")
    clean = {k: v for k, v in raw.items() if k not in _RESOLVED_ONLY[""]}
    for section, keys in _RESOLVED_ONLY.items():
        if section and isinstance(clean.get(section), dict):
            clean[section] = {k: v for k, v in clean[section].items() if k not in keys}
    return _from_raw(where, clean, name=str(raw["name"]), path=Path(str(raw.get("source", where))))


def with_overrides(cfg: EnvConfig, *, seed: int | None = None, **sections: dict[str, Any]) -> EnvConfig:
    """A copy of ``cfg`` with the seed and some fields of some sections replaced (command-line
    overrides); ``None`` values mean "keep"."""
    changes: dict[str, Any] = {} if seed is None else {"seed": seed}
    for section, values in sections.items():
        values = {k: v for k, v in values.items() if v is not None}
        if values:
            changes[section] = dataclasses.replace(getattr(cfg, section), **values)
    return dataclasses.replace(cfg, **changes)

"""Starting from a model trained elsewhere: ``[train] init``.

The standard recipe of DP deep learning is to pre-train on public data and fine-tune privately: the private
steps then spend their noise on a model that already knows brains, not on learning them from scratch. Here
"public" is whatever the user vouches for (another cohort, another site's release); fedsim only loads it. The
run's own seed still draws the model first, so that everything after the start (shuffles, dropout, defenses)
draws as a run without ``init`` would.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from fedsim import snapshots
from fedsim.errors import FedsimError
from fedsim.models import build_model

if TYPE_CHECKING:
    from fedsim.config import EnvConfig

__all__ = ["init_state", "initial_model", "start_from"]


def init_state(init: str | Path) -> dict[str, torch.Tensor]:
    """The weights ``init`` names: a ``.safetensors`` snapshot, or a run directory's model (a centralized run's
    best-validation epoch, which its ``DONE`` names; else its last complete round)."""
    path = Path(init)
    if path.is_dir():
        rounds = snapshots.complete_rounds(path)
        if not rounds:
            raise FedsimError(f"[train] init {str(path)!r}: a directory without snapshots; give a run directory or a "
                              ".safetensors file")
        best = snapshots.read_done(path).get("best_round") if snapshots.is_done(path) else None
        return snapshots.load_round(path, int(best) if best is not None else rounds[-1])[0]
    if not path.is_file():
        from fedsim.config import available_environments, load_env

        train = ""
        if path.name in available_environments():  # a public model whose recipe fedsim ships
            stage = "train" if load_env(path.name).partition.learners else "centralized"
            train = f"; train it first: fedsim {stage} --env {path.name} --out {path}"
        raise FedsimError(f"[train] init {str(path)!r}: no such run directory or .safetensors file{train}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise FedsimError(f"[train] init {str(path)!r}: not a safetensors file ({err})") from None


def start_from(init: str | Path | None, model: nn.Module) -> nn.Module:
    """``model`` with the weights of ``init`` (nothing changes when it is None); weights that do not fit the
    environment's model are one line naming the first mismatch."""
    if init is None:
        return model
    state, own = init_state(init), model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shapes:
        first = (f"its weights lack {missing[0]}" if missing else f"it has {extra[0]}, which this model has not"
                 if extra else f"{shapes[0]} is {tuple(state[shapes[0]].shape)} there, {tuple(own[shapes[0]].shape)} here")
        raise FedsimError(f"[train] init {str(init)!r} does not fit this environment's {type(model).__name__}: {first}"
                          f" ({len(missing)} missing, {len(extra)} unexpected, {len(shapes)} of another shape)")
    model.load_state_dict(state)
    return model


def initial_model(cfg: EnvConfig) -> nn.Module:
    """The environment's model as training starts: built (a draw from torch's generator, as every fresh model
    makes) and given the weights of ``[train] init`` where it names any."""
    return start_from(cfg.train.init, build_model(cfg.model.name, **cfg.model_kwargs()))

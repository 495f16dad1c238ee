"""A user's checkpoint, read without unpickling anything and loaded into the model it belongs to.

Checkpoints are safetensors or PyTorch state dicts read with ``torch.load(weights_only=True)``: a file that holds
pickled objects (a whole ``nn.Module``, a custom class) is refused in one line, never unpickled; a training
checkpoint that keeps its state dict under a usual key (``state_dict``, ``model_state_dict``…) is unwrapped, and
``DataParallel``'s ``module.`` prefix dropped. An SFCN checkpoint of the reference code (Peng et al.'s layer names)
is renamed on reading. Used by :mod:`fedsim.importing` and :mod:`fedsim.federation.recorder`.
"""

from __future__ import annotations

import pickle
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from fedsim.errors import FedsimError
from fedsim.models.sfcn import SFCN, from_reference_state_dict

__all__ = ["load_weights", "read_state_dict", "read_weights"]

_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")  # where training scripts keep one
REFERENCE_SFCN = "feature_extractor.conv_"  # how the reference SFCN code's state dicts begin (module. removed)


def _only_tensors(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in ``path``: a ``.safetensors`` file, or a PyTorch state dict (or a training checkpoint
    holding one under ``state_dict``, ``model_state_dict``…) read with ``torch.load(weights_only=True)``.

    Raises
    ------
    FedsimError
        One line for a missing file, a file of pickled objects (refused: never unpickled), or a file that
        holds no state dict.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    if not path.is_file():
        raise FedsimError(f"{where} not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise FedsimError(f"{where} is not a readable safetensors file ({err})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        what = f"a pickled {found.group(1)} object" if found else "pickled Python objects"
        raise FedsimError(f"{where} holds {what}, which fedsim does not unpickle (torch.load(weights_only=True)); "
                          "save the model's state_dict() instead (torch.save or safetensors)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zlib.error) as err:
        reason = " ".join(str(err).split())[:200]
        raise FedsimError(f"{where} is not a PyTorch checkpoint ({type(err).__name__}: {reason})") from None
    if not _only_tensors(obj) and isinstance(obj, Mapping):
        inner = [k for k in _STATE_KEYS if _only_tensors(obj.get(k))]
        if inner:
            obj = obj[inner[0]]
    if not _only_tensors(obj):
        shown = f"a dict with keys {', '.join(map(repr, list(obj)[:6]))}" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise FedsimError(f"{where} holds {shown}, not a state dict (parameter name -> tensor); save model.state_dict() "
                          f"or keep it under one of: {', '.join(_STATE_KEYS)}")
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):  # saved from torch.nn.DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_weights(model: nn.Module, path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """The state dict in ``path`` (:func:`read_state_dict`) under ``model``'s parameter names, and whether it
    was renamed: for fedsim's SFCN, a checkpoint of the reference code (``feature_extractor.conv_<i>``…,
    ha-ha-ha-han/UKBiobank_deep_pretrain) goes through :func:`~fedsim.models.sfcn.from_reference_state_dict`."""
    state = read_state_dict(path)
    if isinstance(model, SFCN) and any(k.startswith(REFERENCE_SFCN) for k in state):
        return from_reference_state_dict(state), True
    return state, False


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into ``model`` (strictly), or say in one line what does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{'…' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{'…' if len(unexpected) > 4 else ''}")
        if shapes:
            k = shapes[0]
            parts.append(f"{k} is {tuple(state[k].shape)} there but {tuple(own[k].shape)} in the model")
        name = getattr(model, "fedsim_factory", type(model).__name__)
        raise FedsimError(f"{where} does not fit {name} built with its declared arguments: {'; '.join(parts)}")
    model.load_state_dict(dict(state))

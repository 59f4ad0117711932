"""Atomic file writes, and checkpoints that hold a ``state_dict`` only (loaded with ``weights_only=True``)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, unsafe or does not fit the model."""


def atomic_write(path: str | Path, write: Callable) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Atomically write the state_dict of ``model`` to ``path``; returns the path."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"save_checkpoint needs an nn.Module, got {type(model).__name__}.")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights at ``path`` into ``model`` (strict names and shapes); returns the model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train the model first or check the path.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} could not be loaded safely (weights_only=True accepts only "
                              f"tensors and plain containers; tampered, truncated or not a state_dict?): {err}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} does not hold a state_dict (name -> tensor).")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {path} does not fit {type(model).__name__}: {err}") from err
    return model

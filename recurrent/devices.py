"""Where models and batches live: a device name checked (`resolve_device`), a model's device, a batch moved."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from recurrent.errors import UserError


def resolve_device(name: str) -> torch.device:
    """"cpu", "cuda" or "cuda:N" -> a torch.device. UserError naming the value if it is none of these, or if it
    asks for a GPU this machine does not have: never a silent fallback to the CPU."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} needs a CUDA GPU, but torch {torch.__version__} finds none here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                            f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def model_device(model: nn.Module) -> torch.device:
    """Where a model's parameters are (every model here has at least one)."""
    return next(model.parameters()).device


def to_device(batch, device: torch.device):
    """A batch moved to `device`: a tensor, or a dict, NamedTuple, list or tuple of them (other values are kept
    as they are)."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):  # e.g. a TreeBatch's per-level index pairs
        return type(batch)(to_device(v, device) for v in batch)
    return batch

"""Checkpoints as safetensors plus JSON: tensors in `{name}.safetensors`, everything else in `{name}.json`.

Security: a checkpoint never runs code when it loads. recurrent never calls torch.load or pickle.load, and a
pickle file (torch.save's .pt, .pth, .bin, .ckpt) is refused with a message that says so.

A training run saves its model, optimizer and RNG state in one checkpoint, and resumes bit-identically:

    tensors, meta = dict(model.state_dict()), {"config": asdict(config), "vocab": vocab.to_dict(), "step": step}
    optim_tensors, meta["optimizer"] = flatten_optimizer_state(optimizer.state_dict())
    rng_tensors, meta["rng"] = rng_state()
    save_checkpoint(run_dir, {**tensors, **optim_tensors, **rng_tensors}, meta)

    tensors, meta = load_checkpoint(run_dir)
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(("optim.", "rng."))})
    optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))
    set_rng_state(tensors, meta["rng"])
"""
from __future__ import annotations

import json
import os
import random
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from recurrent.errors import UserError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")


# --- save and load ------------------------------------------------------------------------------------------


def save_checkpoint(path_dir, tensors: dict[str, Tensor], meta: dict, name: str = "model") -> None:
    """Write `{name}.safetensors` and `{name}.json` in `path_dir` (created if needed), atomically.

    Each file is written to a temporary file in the same directory, flushed to disk (fsync), and renamed over
    the old one (os.replace, atomic on POSIX and Windows). Both temporary files are complete before either
    rename, so a crash or error while writing leaves the previous checkpoint as it was, and no temporary file
    behind. (The two renames are not one atomic step: a crash in the microseconds between them would pair the
    new tensors with the old meta.)

    Tensors are saved detached, contiguous and on the CPU; tensors that share storage (tied weights) are
    saved as separate copies, so every name loads back.
    """
    meta_text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"  # TypeError now if meta is not JSON-safe
    directory = Path(path_dir)
    directory.mkdir(parents=True, exist_ok=True)
    st_path, json_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    st_tmp = json_tmp = None
    try:
        st_tmp = _temp_path(directory, st_path)
        save_file(_plain_tensors(tensors), str(st_tmp))
        _fsync(st_tmp)
        json_tmp = _temp_path(directory, json_path)
        json_tmp.write_text(meta_text, encoding="utf-8")
        _fsync(json_tmp)
        os.replace(st_tmp, st_path)
        os.replace(json_tmp, json_path)
    finally:
        for tmp in (st_tmp, json_tmp):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    _fsync_directory(directory)


def _plain_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Detached, contiguous CPU tensors, each with its own storage (safetensors refuses shared storage)."""
    out, seen = {}, set()
    for key, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"checkpoint tensors must be torch.Tensor, got {type(t).__name__} for {key!r}")
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:
            t = t.clone()
        seen.add(ptr)
        out[key] = t
    return out


def _temp_path(directory: Path, final: Path) -> Path:
    """A fresh hidden name beside `final` (not tempfile.mkstemp: its files are private, mode 0600)."""
    return directory / f".{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable. Not possible on Windows, where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path, name: str = "model") -> tuple[dict[str, Tensor], dict]:
    """(tensors, meta) from a run directory (its `{name}.safetensors` and `{name}.json`) or a .safetensors file
    (with the .json beside it). Tensors load on the CPU. Refuses pickle files; never unpickles."""
    path = Path(path)
    if path.is_dir():
        st_path = path / f"{name}.safetensors"
        if not st_path.exists():
            pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
            if pickles:
                raise UserError(_refusal(pickles[0]))
            raise UserError(f"no checkpoint in {path}: looked for {st_path}")
    else:
        st_path = path
        if not st_path.exists():
            raise UserError(f"no checkpoint: {st_path} does not exist")
    _check_safetensors(st_path)
    json_path = st_path.with_suffix(".json")
    if not json_path.exists():
        raise UserError(f"{json_path} is missing: a checkpoint is {st_path.name} and {json_path.name}")
    try:
        tensors = load_file(str(st_path))
    except SafetensorError as e:
        raise UserError(f"{st_path} is not a valid safetensors file: {e}") from None
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{json_path} is not valid JSON: {e}") from None
    return tensors, meta


def _check_safetensors(path: Path) -> None:
    """A safetensors file starts with an 8-byte little-endian header length, then a JSON header ("{"); the
    length's first byte can be anything, 0x80 included. torch.save writes a zip archive ("PK\\x03\\x04", with a
    pickle inside) or, before torch 1.6, a bare pickle (protocol 2 to 5 starts with 0x80 and the protocol)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return
    if head.startswith(b"PK\x03\x04") or head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise UserError(_refusal(path))
    raise UserError(f"{path} is not a safetensors file (its header does not parse)")


def _refusal(path: Path) -> str:
    return (f"refusing to load {path}: it is a pickle file, and recurrent never unpickles (security); "
            f"convert it to safetensors (safetensors.torch.save_file), where you trust the file")


# --- optimizer state ----------------------------------------------------------------------------------------


def flatten_optimizer_state(sd: dict, prefix: str = "optim.") -> tuple[dict[str, Tensor], dict]:
    """A torch optimizer's state_dict -> (tensors, JSON-safe meta), for save_checkpoint.

    Tensors go to `{prefix}state.{param_id}.{key}` (and `{prefix}param_groups.{i}.{key}` for a tensor
    hyper-parameter such as a tensor lr); in the meta they appear as {"tensor": name}. Tuples (AdamW's betas)
    are kept as {"tuple": [...]}, so unflatten_optimizer_state gives back exactly the same state_dict.
    """
    tensors: dict[str, Tensor] = {}
    state = {str(pid): {key: _encode(value, f"{prefix}state.{pid}.{key}", tensors) for key, value in s.items()}
             for pid, s in sd["state"].items()}
    groups = [{key: _encode(value, f"{prefix}param_groups.{i}.{key}", tensors) for key, value in group.items()}
              for i, group in enumerate(sd["param_groups"])]
    return tensors, {"state": state, "param_groups": groups}


def unflatten_optimizer_state(tensors: dict[str, Tensor], meta: dict, prefix: str = "optim.") -> dict:
    """(tensors, meta) of flatten_optimizer_state -> a state_dict for `optimizer.load_state_dict`.
    `tensors` may hold other entries too (the whole checkpoint); only the ones the meta names are used."""
    state = {int(pid): {key: _decode(value, tensors) for key, value in s.items()} for pid, s in meta["state"].items()}
    groups = [{key: _decode(value, tensors) for key, value in group.items()} for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def _encode(value, name: str, tensors: dict[str, Tensor]):
    if isinstance(value, Tensor):
        tensors[name] = value
        return {"tensor": name}
    if isinstance(value, tuple):
        return {"tuple": [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"optimizer state {name!r} is a {type(value).__name__}, which a checkpoint cannot hold")


def _decode(value, tensors: dict[str, Tensor]):
    if isinstance(value, dict) and "tensor" in value:
        return tensors[value["tensor"]]
    if isinstance(value, dict) and "tuple" in value:
        return tuple(_decode(v, tensors) for v in value["tuple"])
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    return value


# --- random number generators -------------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, Tensor], dict]:
    """Every RNG a training run draws from -> (tensors, JSON-safe meta): torch's CPU generator ("rng.torch",
    a ByteTensor), each CUDA device's ("rng.cuda.{i}"), and python's `random` and numpy's global states."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    tensors = {"rng.torch": torch.get_rng_state(), **{f"rng.cuda.{i}": s for i, s in enumerate(cuda)}}
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)],
        "cuda_devices": len(cuda),
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, Tensor], meta: dict) -> None:
    """Restore what rng_state captured. CUDA states are restored when this machine has as many devices;
    otherwise they are skipped with a warning (a GPU run resumed on the CPU needs only the CPU generator)."""
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[f"rng.cuda.{i}"] for i in range(meta["cuda_devices"])]
    if cuda:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            found = torch.cuda.device_count() if torch.cuda.is_available() else 0
            warnings.warn(f"checkpoint has RNG states for {len(cuda)} CUDA devices, this machine has {found}: "
                          f"CUDA RNG not restored")
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached_gaussian = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))

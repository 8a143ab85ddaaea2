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

Loading something built from the file checks before it allocates (recurrent/inference/common.py, load_best):
open_checkpoint reads the JSON and verifies the tensors file's SHA-256 (saved in the JSON), recurrent.schema
checks the JSON, check_tensor_header compares the file's tensor names, shapes and dtypes with a model built on
the meta device, and read_tensors(finite=True) refuses NaN and infinite weights. Each failure is one line.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import uuid
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import Tensor

from recurrent.errors import UserError

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float64: "F64", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
                      torch.uint8: "U8", torch.bool: "BOOL"}  # torch -> header


# --- save and load ------------------------------------------------------------------------------------------

OWN_META, OWN_BODY = "recurrent.meta", "recurrent.data_sha256"  # in the safetensors header: see _with_own_meta
CHECKSUM = "tensors_sha256"  # the key in `{name}.json` that holds the SHA-256 of `{name}.safetensors`
TEMP_NAME = re.compile(r"\.(?P<final>.+\.(?:safetensors|json))\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")  # _temp_path's


def save_checkpoint(path_dir, tensors: dict[str, Tensor], meta: dict, name: str = "model") -> None:
    """Write `{name}.safetensors` and `{name}.json` in `path_dir` (created if needed), atomically.

    Each file is written to a fresh temporary file in the same directory (created, never followed through a
    symlink), flushed to disk (fsync), and renamed over the old one (os.replace, atomic on POSIX and Windows).
    Both temporary files are complete before either rename, so a crash or error while writing leaves the previous
    checkpoint as it was. The JSON records the SHA-256 of the tensors file and is renamed last: a crash between
    the two renames leaves new tensors beside the old JSON, a pair that load_checkpoint refuses (the checksum
    differs) instead of silently mixing two saves. A crash mid-write can leave a `.*.tmp` file: clean_temp_files.

    Tensors are saved detached, contiguous and on the CPU; tensors that share storage (tied weights) are
    saved as separate copies, so every name loads back.
    """
    if CHECKSUM in meta:
        raise ValueError(f"{CHECKSUM!r} is save_checkpoint's own key in the meta: use another name")
    json.dumps(meta)  # TypeError now, before anything is written, if meta is not JSON-safe
    directory = Path(path_dir)
    directory.mkdir(parents=True, exist_ok=True)
    st_path, json_path = directory / f"{name}.safetensors", directory / f"{name}.json"
    for final in (st_path, json_path):
        if final.is_symlink():
            raise UserError(f"refusing to write {final}: it is a symbolic link (to {os.readlink(final)}), and a "
                            f"checkpoint replaces its files; remove the link or choose another run folder")
    data = _with_own_meta(_plain_tensors(tensors), meta)
    meta_text = json.dumps({CHECKSUM: hashlib.sha256(data).hexdigest(), **meta}, indent=2, ensure_ascii=False) + "\n"
    st_tmp = json_tmp = None
    try:
        st_tmp = _write_new(_temp_path(directory, st_path), data)
        json_tmp = _write_new(_temp_path(directory, json_path), meta_text.encode("utf-8"))
        os.replace(st_tmp, st_path)
        os.replace(json_tmp, json_path)  # last: the JSON vouches for the tensors file beside it
    finally:
        for tmp in (st_tmp, json_tmp):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    _fsync_directory(directory)


def write_text_atomic(path, text: str) -> None:
    """Replace the text file `path` whole (a temporary file beside it, fsynced, renamed over it): a reader, such as
    another process of a distributed run, sees the old file or the new one, never a half-written one."""
    path = Path(path)
    if path.is_symlink():
        raise UserError(f"refusing to write {path}: it is a symbolic link (to {os.readlink(path)})")
    tmp = None
    try:
        tmp = _write_new(_temp_path(path.parent, path), text.encode("utf-8"))
        os.replace(tmp, path)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    _fsync_directory(path.parent)  # the rename too, as save_checkpoint's


def _with_own_meta(tensors: dict[str, Tensor], meta: dict) -> bytes:
    """The safetensors file, whose header also holds a copy of the meta and the SHA-256 of its tensor data: the
    file alone is one consistent save. When a crash between the two renames leaves it beside an older JSON,
    open_checkpoint reads the meta from here (the newest consistent save) instead of refusing both."""
    body = save(tensors)
    body = body[8 + int.from_bytes(body[:8], "little"):]  # the data after the header: the same bytes below
    return save(tensors, metadata={OWN_META: json.dumps(meta, ensure_ascii=False),
                                   OWN_BODY: hashlib.sha256(body).hexdigest()})


def _own_meta(path: Path) -> dict | None:
    """The meta a tensors file holds of itself (see _with_own_meta), if it has one and its data is intact."""
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header[OWN_META])
        with open(path, "rb") as f:
            f.seek(8 + int.from_bytes(f.read(8), "little"))
            intact = hashlib.file_digest(f, "sha256").hexdigest() == header[OWN_BODY]
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
    return meta if intact and isinstance(meta, dict) else None


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


def _write_new(path: Path, data: bytes) -> Path:
    """Create `path` (it must not exist, and is never a symlink followed), write `data`, fsync; return `path`.
    Mode 0666 less the umask, as any new file. A partial file is removed if the write fails."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


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


def clean_temp_files(run_dir) -> int:
    """Delete the temporary files that interrupted saves left in `run_dir` (only the names _temp_path makes,
    and not those of a save still running in another live process); return how many were deleted."""
    directory, removed = Path(run_dir), 0
    if not directory.is_dir():
        return 0
    for path in directory.iterdir():
        match = TEMP_NAME.fullmatch(path.name)
        if match is None or (path.is_dir() and not path.is_symlink()):
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _alive(pid):
            continue
        path.unlink(missing_ok=True)  # a symlink is removed itself, never what it points to
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or we cannot tell: leave its files alone
    return True


class Checkpoint(NamedTuple):
    tensors_path: Path  # {name}.safetensors: checked to be one (not a pickle), matching the JSON's checksum
    meta_path: Path  # {name}.json
    meta: dict  # its content, without the checksum


def open_checkpoint(path, name: str = "model") -> Checkpoint:
    """Find a checkpoint (a run directory's `{name}.safetensors` and `{name}.json`, or a .safetensors file with
    the .json beside it), refuse a pickle, read the JSON and verify the tensors file's checksum. No tensor is
    loaded: check the JSON (recurrent.schema) and the tensors' header (check_tensor_header) first."""
    st_path = _find(Path(path), name)
    _check_safetensors(st_path)
    json_path = st_path.with_suffix(".json")
    if not json_path.exists():  # a first save interrupted between its two renames, or a file lost
        return Checkpoint(st_path, json_path, _recover(st_path, f"{json_path} is missing: a checkpoint is "
                                                                f"{st_path.name} and {json_path.name}"))
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{json_path} is not valid JSON: {e}") from None
    if isinstance(meta, dict) and CHECKSUM in meta:  # checkpoints saved before checksums have none
        meta = dict(meta)
        expected = meta.pop(CHECKSUM)
        with open(st_path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != expected:  # a save interrupted between its two renames (new tensors, old JSON), or damage
            meta = _recover(st_path, f"{st_path} does not match {json_path.name} (its checksum differs): the pair "
                                     f"comes from different saves or the file is damaged")
    return Checkpoint(st_path, json_path, meta)


def _recover(st_path: Path, refusal: str) -> dict:
    """The meta the tensors file holds of itself, when its JSON is missing or from another save: the newest
    consistent save, with a warning. Where the file has none, or its data is damaged, UserError(refusal)."""
    meta = _own_meta(st_path)
    if meta is None:
        raise UserError(refusal)
    warnings.warn(f"{refusal.split(':')[0]}: a save was interrupted between its two files; using the copy of the "
                  f"meta inside {st_path.name}, which matches its tensors")
    return meta


def _find(path: Path, name: str) -> Path:
    """The .safetensors file of a checkpoint path; UserError naming what was looked for, or the pickle found."""
    if not path.is_dir():
        if not path.exists():
            raise UserError(f"no checkpoint: {path} does not exist")
        return path
    st_path = path / f"{name}.safetensors"
    if not st_path.exists():
        pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
        if pickles:
            raise UserError(_refusal(pickles[0]))
        raise UserError(f"no checkpoint in {path}: looked for {st_path}")
    return st_path


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


def check_tensor_header(path, expected: dict[str, Tensor]) -> None:
    """UserError unless the safetensors file at `path` holds exactly the tensors of `expected` (a state_dict,
    typically of a model built on the meta device: nothing allocated), each of the same shape and dtype. Reads
    the header only."""
    try:
        with safe_open(str(path), framework="pt") as f:
            found = {key: f.get_slice(key) for key in f.keys()}  # (safe_open has no __iter__)
            shapes = {key: (tuple(s.get_shape()), s.get_dtype()) for key, s in found.items()}
    except SafetensorError as e:
        raise UserError(f"{path} is not a valid safetensors file: {e}") from None
    missing, extra = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    if missing:
        raise UserError(f"{path} lacks tensor {missing[0]!r} (of shape {tuple(expected[missing[0]].shape)}) "
                        f"that the model config implies" + (f" ({len(missing)} missing in all)" if len(missing) > 1 else ""))
    if extra:
        raise UserError(f"{path} holds tensor {extra[0]!r}, which the model config has no place for"
                        + (f" ({len(extra)} unknown in all)" if len(extra) > 1 else ""))
    for key, t in expected.items():
        shape, dtype = shapes[key]
        if shape != tuple(t.shape):
            raise UserError(f"{path}: tensor {key!r} has shape {shape}, but the model config implies {tuple(t.shape)}")
        if dtype != SAFETENSORS_DTYPES.get(t.dtype):
            raise UserError(f"{path}: tensor {key!r} has dtype {dtype}, but the model has "
                            f"{str(t.dtype).removeprefix('torch.')}")



def read_tensors(path, finite: bool = False) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, on the CPU. finite: UserError naming the first floating tensor
    with a NaN or an infinity (a model's weights)."""
    try:
        tensors = load_file(str(path))
    except SafetensorError as e:
        raise UserError(f"{path} is not a valid safetensors file: {e}") from None
    if finite:
        for key, t in tensors.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                what = "NaN" if bool(torch.isnan(t).any()) else "infinite values"
                raise UserError(f"{path}: tensor {key!r} holds {what}: the weights are damaged "
                                f"(a diverged run or a corrupt file)")
    return tensors


def load_checkpoint(path, name: str = "model", finite: bool = False) -> tuple[dict[str, Tensor], dict]:
    """(tensors, meta) from a run directory (its `{name}.safetensors` and `{name}.json`) or a .safetensors file
    (with the .json beside it), checksum verified (see open_checkpoint). Tensors load on the CPU; finite: see
    read_tensors. Refuses pickle files; never unpickles."""
    checkpoint = open_checkpoint(path, name)
    return read_tensors(checkpoint.tensors_path, finite), checkpoint.meta


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

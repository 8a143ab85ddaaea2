"""Checkpoints: round trips, atomic writes, refusal of pickle files, and a bit-identical resume of training
(optimizer state and RNG states through a checkpoint)."""
from __future__ import annotations

import json
import os
import pickle
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

import recurrent.checkpoint as ckpt
from recurrent.checkpoint import (flatten_optimizer_state, load_checkpoint, rng_state, save_checkpoint,
                                  set_rng_state, unflatten_optimizer_state, write_text_atomic)
from recurrent.errors import UserError

META = {"config": {"hidden_size": 8, "cell": "lstm", "lr": 1e-3, "tie": True}, "vocab": ["<unk>", "é", "🙂"],
        "step": 12, "best": None}


@pytest.fixture(autouse=True)
def never_unpickle(monkeypatch):
    """Loading must not reach pickle in any test here, even for the files it refuses."""
    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling was attempted")
    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads")]:
        monkeypatch.setattr(module, name, forbidden)


def some_tensors() -> dict[str, torch.Tensor]:
    weight = torch.randn(5, 3)
    return {
        "embedding.weight": weight,
        "decoder.weight": weight,  # tied: the same storage under two names
        "half": weight[2:],  # a view into it
        "transposed": torch.randn(3, 4).t(),  # not contiguous
        "f64": torch.randn(2, dtype=torch.float64),
        "bf16": torch.randn(4).to(torch.bfloat16),
        "ids": torch.arange(6),
        "mask": torch.tensor([True, False]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k


def test_round_trip(tmp_path):
    tensors = some_tensors()
    save_checkpoint(tmp_path / "run" / "nested", tensors, META)  # creates the directories
    for path in (tmp_path / "run" / "nested", tmp_path / "run" / "nested" / "model.safetensors"):
        loaded, meta = load_checkpoint(path)
        assert_same(loaded, tensors)
        assert meta == META
    assert sorted(os.listdir(tmp_path / "run" / "nested")) == ["model.json", "model.safetensors"]


def test_named_checkpoints_side_by_side(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, {"which": "last"}, name="last")
    save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {"which": "best"}, name="best")
    assert load_checkpoint(tmp_path, name="best")[1] == {"which": "best"}
    assert torch.equal(load_checkpoint(tmp_path / "last.safetensors")[0]["w"], torch.ones(2))


def test_meta_not_json_safe_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "run", {"w": torch.ones(1)}, {"tensor": torch.ones(1)})
    assert not (tmp_path / "run").exists()


# --- atomic writes ------------------------------------------------------------------------------------------


def fail_on_call(n: int, real):
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == n:
            raise OSError("disk on fire")
        return real(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("where", ["replace", "safetensors_writer", "json_writer"])
def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, where):
    old = {"w": torch.arange(4.0)}
    save_checkpoint(tmp_path, old, {"step": 1})
    if where == "replace":
        monkeypatch.setattr(ckpt.os, "replace", fail_on_call(1, os.replace))
    else:  # a crash mid-write of the tensors' (or the JSON's) temporary file, once its bytes are in it
        monkeypatch.setattr(ckpt.os, "fsync", fail_on_call(1 if where == "safetensors_writer" else 2, os.fsync))
    with pytest.raises(OSError, match="disk on fire"):
        save_checkpoint(tmp_path, {"w": torch.zeros(4), "new": torch.ones(1)}, {"step": 2})
    tensors, meta = load_checkpoint(tmp_path)
    assert_same(tensors, old)
    assert meta == {"step": 1}
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.safetensors"]  # no temporary file left


def test_save_writes_through_a_temporary_file(tmp_path, monkeypatch):
    """The final names only ever appear through os.replace, from a temporary file in the same directory."""
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((os.path.dirname(src), os.path.basename(dst)))
        assert os.path.basename(src).startswith(".") and os.path.basename(src).endswith(".tmp")
        return real_replace(src, dst)
    monkeypatch.setattr(ckpt.os, "replace", spy)
    save_checkpoint(tmp_path, {"w": torch.ones(3)}, {})
    assert replaced == [(str(tmp_path), "model.safetensors"), (str(tmp_path), "model.json")]


def test_a_reader_never_sees_a_half_written_text_file(tmp_path):
    """config.json is rewritten by rank 0 of a resumed distributed run while the other ranks read it: a reader
    must see the old file or the new one. Path.write_text truncates first, and the reader here then sees ''."""
    import threading
    path = tmp_path / "config.json"
    texts = [json.dumps({"task": "lm", "pad": c * 200_000}) for c in "ab"]
    write_text_atomic(path, texts[0])
    done, seen = threading.Event(), set()

    def read():
        while not done.is_set():
            seen.add(path.read_text(encoding="utf-8"))
    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            write_text_atomic(path, texts[i % 2])
    finally:
        done.set()
        reader.join()
    assert seen <= set(texts)  # whole files only
    assert sorted(os.listdir(tmp_path)) == ["config.json"]  # no temporary file left


def test_a_failed_text_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_text_atomic(path, "old\n")
    monkeypatch.setattr(ckpt.os, "fsync", fail_on_call(1, os.fsync))
    with pytest.raises(OSError, match="disk on fire"):
        write_text_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


# --- refusing pickles, and other bad files ------------------------------------------------------------------


def torch_save(obj, path, **kwargs):
    torch.save(obj, path, **kwargs)  # the fixture patches torch.load only
    return path


REFUSAL = "it is a pickle file, and recurrent never unpickles (security); convert it to safetensors"


@pytest.mark.parametrize("name, kwargs", [
    ("model.pt", {}),
    ("model.safetensors", {}),  # a zip archive (torch.save's format) wearing the wrong name
    ("model.safetensors", {"_use_new_zipfile_serialization": False}),  # the legacy format: a bare pickle
], ids=["pt", "zip_named_safetensors", "legacy_pickle_named_safetensors"])
def test_refuses_pickle_files(tmp_path, name, kwargs):
    path = torch_save({"w": torch.ones(2)}, tmp_path / name, **kwargs)
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(UserError, match=re.escape(f"refusing to load {path}: {REFUSAL}")):
        load_checkpoint(path)


def test_refuses_a_run_directory_holding_only_a_pickle(tmp_path):
    torch_save({"w": torch.ones(2)}, tmp_path / "model.pt")
    with pytest.raises(UserError, match=re.escape(f"refusing to load {tmp_path / 'model.pt'}: {REFUSAL}")):
        load_checkpoint(tmp_path)


def test_header_length_starting_with_0x80_is_not_mistaken_for_a_pickle(tmp_path):
    """A pickle starts with 0x80; so does a safetensors file whose header length is 128 (mod 256)."""
    for n in range(1, 300):
        save_checkpoint(tmp_path, {"w" * n: torch.ones(1)}, {})
        if (tmp_path / "model.safetensors").read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length of 128 mod 256 was produced")
    assert torch.equal(load_checkpoint(tmp_path)[0]["w" * n], torch.ones(1))


def test_missing_checkpoint_names_what_was_looked_for(tmp_path):
    with pytest.raises(UserError, match=re.escape(f"no checkpoint in {tmp_path}: looked for "
                                                  f"{tmp_path / 'model.safetensors'}")):
        load_checkpoint(tmp_path)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'x.safetensors'} does not exist")):
        load_checkpoint(tmp_path / "x.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.ones(1)}, tmp_path / "model.safetensors")  # tensors alone, not saved by recurrent
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'model.json'} is missing")):
        load_checkpoint(tmp_path)


def test_a_save_interrupted_between_its_two_renames_loads_the_newest_consistent_save(tmp_path):
    """save_checkpoint renames the tensors file, then the JSON. A kill between the two leaves the new tensors
    beside the old JSON (or, on a first save, no JSON): the tensors file holds its own meta, which is used."""
    save_checkpoint(tmp_path, {"w": torch.zeros(2)}, {"step": 1})
    old_json = (tmp_path / "model.json").read_text()
    save_checkpoint(tmp_path, {"w": torch.ones(2)}, {"step": 2})
    (tmp_path / "model.json").write_text(old_json)  # the kill
    with pytest.warns(UserWarning, match="a save was interrupted between its two files"):
        tensors, meta = load_checkpoint(tmp_path)
    assert meta == {"step": 2} and tensors["w"].equal(torch.ones(2))
    (tmp_path / "model.json").unlink()  # a first save, killed before its JSON
    with pytest.warns(UserWarning, match="model.json is missing"):
        assert load_checkpoint(tmp_path)[1] == {"step": 2}
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-1] ^= 0x40  # damaged data: the tensors file's own checksum fails too, and nothing is trusted
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="model.json is missing"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\xff" * 8 + b"{}"])
def test_garbage_is_not_a_safetensors_file(tmp_path, content):
    (tmp_path / "model.safetensors").write_bytes(content)
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(UserError, match="is not a safetensors file"):
        load_checkpoint(tmp_path)


def test_bad_meta_json(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.ones(1)}, {})
    (tmp_path / "model.json").write_text('{"step": 1,\n')
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'model.json'} is not valid JSON")):
        load_checkpoint(tmp_path)


def test_truncated_safetensors(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.randn(100)}, {})
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-50])
    with pytest.raises(UserError, match="its checksum differs"):
        load_checkpoint(tmp_path)
    (tmp_path / "model.json").write_text("{}")  # saved before checksums: safetensors itself finds the damage
    with pytest.raises(UserError, match="is not a valid safetensors file"):
        load_checkpoint(tmp_path)


# --- optimizer and RNG state: resuming training bit-identically ---------------------------------------------


def make_run(optimizer: str):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 2))
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    return model, opt


def train_steps(model, opt, n: int) -> list[float]:
    """Draws from every RNG a run uses: torch (data, dropout), python's random and numpy (augmentation)."""
    losses = []
    for _ in range(n):
        x = torch.randn(16, 4) * random.uniform(0.5, 1.5) + float(np.random.normal())
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_resume_is_bit_identical(tmp_path, optimizer):
    model, opt = make_run(optimizer)
    random.seed(1)
    np.random.seed(2)
    train_steps(model, opt, 3)
    optim_tensors, optim_meta = flatten_optimizer_state(opt.state_dict())
    rng_tensors, rng_meta = rng_state()
    save_checkpoint(tmp_path, {**model.state_dict(), **optim_tensors, **rng_tensors},
                    {"optimizer": optim_meta, "rng": rng_meta})
    expected_losses = train_steps(model, opt, 4)
    expected_params = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(123)  # scramble every RNG, and start from a fresh model and optimizer
    random.seed(123)
    np.random.seed(123)
    model, opt = make_run(optimizer)
    tensors, meta = load_checkpoint(tmp_path)
    model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(("optim.", "rng."))})
    opt.load_state_dict(unflatten_optimizer_state(tensors, meta["optimizer"]))
    set_rng_state(tensors, meta["rng"])
    assert train_steps(model, opt, 4) == expected_losses
    assert_same(model.state_dict(), expected_params)


def test_optimizer_state_dict_round_trip_is_exact():
    model, opt = make_run("adamw")
    train_steps(model, opt, 2)
    sd = opt.state_dict()
    tensors, meta = flatten_optimizer_state(sd, prefix="opt/")
    assert all(k.startswith("opt/state.") for k in tensors)
    again = unflatten_optimizer_state(tensors, meta, prefix="opt/")
    assert again["param_groups"] == sd["param_groups"]  # betas come back as a tuple, None as None
    assert isinstance(again["param_groups"][0]["betas"], tuple)
    assert again["state"].keys() == sd["state"].keys()
    for pid, state in sd["state"].items():
        assert_same(again["state"][pid], state)  # step, exp_avg, exp_avg_sq, max_exp_avg_sq


def test_rng_round_trip(tmp_path):
    random.seed(5)
    np.random.seed(5)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    tensors, meta = rng_state()
    assert tensors["rng.torch"].dtype == torch.uint8
    save_checkpoint(tmp_path, tensors, {"rng": meta})
    draws = (torch.rand(3).tolist(), random.random(), random.gauss(0, 1), np.random.rand(2).tolist())
    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    tensors, meta = load_checkpoint(tmp_path)
    set_rng_state(tensors, meta["rng"])
    assert (torch.rand(3).tolist(), random.random(), random.gauss(0, 1), np.random.rand(2).tolist()) == draws

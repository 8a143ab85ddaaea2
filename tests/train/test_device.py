"""The trainers' and commands' `device` option on a machine without a GPU (CI): a bad value, or CUDA asked for
where there is none, is a one-line UserError naming the value; `to_device` moves a batch. Training on CUDA
itself is tested in tests/test_cuda.py."""
from __future__ import annotations

from typing import NamedTuple

import pytest
import torch

from recurrent.cli.main import main
from recurrent.errors import UserError
from recurrent.train.classify import TrainClassifyConfig
from recurrent.train.common import model_device, resolve_device, to_device
from recurrent.train.lm import TrainLMConfig
from recurrent.train.loop import flat_replace
from recurrent.train.tag import TrainTagConfig
from recurrent.train.translate import TrainTranslateConfig

BAD = ["gpu", "", "cuda:x", "mps", "cpu cuda"]


@pytest.fixture
def no_gpu(monkeypatch):
    """Pretend this machine has no CUDA device, as CI does (so these tests mean the same on a GPU machine)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name", BAD)
def test_a_bad_device_is_a_user_error_naming_it(name):
    with pytest.raises(UserError, match=f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_a_user_error_naming_it(no_gpu, name):
    with pytest.raises(UserError, match=f"device {name!r} needs a CUDA GPU, but torch .* finds none here"):
        resolve_device(name)


def test_cpu_resolves_to_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("config", [
    lambda d: flat_replace(TrainLMConfig(data="x.txt"), device=d),
    lambda d: flat_replace(TrainTranslateConfig(), synthetic="reverse", device=d),
    lambda d: flat_replace(TrainTagConfig(), train="a", valid="b", device=d),
    lambda d: flat_replace(TrainClassifyConfig(), train="a", valid="b", device=d),
])
def test_every_trainer_config_validates_its_device(no_gpu, config):
    config("cpu").validate()
    with pytest.raises(UserError, match="got 'gpu'"):
        config("gpu").validate()
    with pytest.raises(UserError, match="device 'cuda' needs a CUDA GPU"):
        config("cuda").validate()


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text("the cat sat on the mat\n" * 20, encoding="utf-8")
    return path


@pytest.mark.parametrize("device, message", [
    ("gpu", "device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ("cuda", "device 'cuda' needs a CUDA GPU"),
])
@pytest.mark.parametrize("command", [
    lambda text, out: ["train", "lm", "--data", str(text), "--out", str(out), "--max-steps", "1", "--no-progress"],
    lambda text, out: ["train", "translate", "--task", "reverse", "--out", str(out), "--max-steps", "1",
                       "--no-progress"],
    lambda text, out: ["train", "tag", "--train", str(text), "--valid", str(text), "--out", str(out),
                       "--max-steps", "1", "--no-progress"],
    lambda text, out: ["train", "classify", "--train", str(text), "--valid", str(text), "--out", str(out),
                       "--max-steps", "1", "--no-progress"],
])
def test_train_commands_fail_in_one_line_before_training(no_gpu, text, tmp_path, capsys, command, device, message):
    out = tmp_path / "run"
    assert main([*command(text, out), "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("command", [["generate"], ["evaluate", "--data", "x.txt"], ["translate"]])
def test_use_commands_fail_in_one_line(no_gpu, tmp_path, capsys, command):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"task": "lm"}')
    assert main([command[0], str(run), *command[1:], "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "got 'gpu'" in err


class Batch(NamedTuple):
    words: torch.Tensor
    lengths: torch.Tensor


def test_to_device_moves_tensors_in_dicts_and_named_tuples():
    batch = {"x": Batch(torch.ones(2, 3), torch.tensor([3, 1])), "n": 4, "t": torch.zeros(1)}
    moved = to_device(batch, torch.device("meta"))
    assert type(moved["x"]) is Batch and moved["n"] == 4
    assert {t.device.type for t in (moved["x"].words, moved["x"].lengths, moved["t"])} == {"meta"}
    assert model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")


def test_to_device_moves_lists_of_index_pairs():
    levels = [(torch.tensor([1]), torch.tensor([2])), (torch.tensor([0]), torch.tensor([3]))]
    moved = to_device({"levels": levels}, torch.device("meta"))["levels"]
    assert type(moved) is list and all(type(pair) is tuple for pair in moved)
    assert {t.device.type for pair in moved for t in pair} == {"meta"}

"""The capability probe and the choices made from it, on this CPU and on others (the probe monkeypatched):
instruction sets, the native kernels' build level, `--precision auto|fp32|bf16`, and `recurrent info`."""
from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from recurrent import hardware, precision
from recurrent.cli.main import main
from recurrent.errors import UserError

AVX512 = {"avx", "avx2", "fma3", "f16c", "avx512_f", "avx512_bw", "avx512_vl", "avx512_dq"}
CPUS = {  # name -> (arch, features, oneDNN bf16): the kinds of machine users have
    "zen4": ("x86_64", AVX512 | {"avx512_bf16"}, True),
    "sapphire-rapids": ("x86_64", AVX512 | {"avx512_bf16", "amx_tile", "amx_bf16"}, True),
    "skylake-x": ("x86_64", AVX512, True),
    "zen3": ("x86_64", {"avx", "avx2", "fma3", "f16c"}, False),
    "old-x86": ("x86_64", {"avx"}, False),
    "apple-m2": ("arm64", {"neon", "bf16"}, True),
    "graviton2": ("aarch64", {"neon"}, False),
}


def fake_cpu(monkeypatch, kind: str, runs_here: bool = False) -> hardware.CPU:
    """Make the probe describe `kind`. runs_here: keep this CPU's oneDNN answer, for tests that run products
    (a faked oneDNN bf16 would crash a CPU without AVX-512)."""
    arch, features, onednn_bf16 = CPUS[kind]
    real = hardware.cpu()
    fake = dataclasses.replace(real, arch=arch, features=frozenset(features),
                               onednn_bf16=real.onednn_bf16 if runs_here else onednn_bf16)
    monkeypatch.setattr(hardware, "cpu", lambda: fake)
    return fake


def test_the_probe_agrees_with_torch_on_this_cpu():
    cpu = hardware.cpu()
    assert cpu.capability == torch.backends.cpu.get_cpu_capability()
    assert cpu.onednn_bf16 == (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if cpu.capability in ("AVX2", "AVX512"):
        assert {"avx2", "fma3"} <= cpu.features
    if cpu.capability == "AVX512":
        assert cpu.avx512
    assert cpu.threads == torch.get_num_threads()


@pytest.mark.parametrize("kind, isa, native_bf16", [
    ("zen4", "avx512bf16", True), ("sapphire-rapids", "avx512bf16", True), ("skylake-x", "avx512", False),
    ("zen3", "avx2", False), ("old-x86", "generic", False), ("apple-m2", "neon", True), ("graviton2", "neon", False)])
def test_isa_and_native_bf16_for_each_kind_of_cpu(monkeypatch, kind, isa, native_bf16):
    cpu = fake_cpu(monkeypatch, kind)
    assert hardware.best_isa() == isa and hardware.native_isa() == isa
    assert cpu.native_bf16 == native_bf16 == hardware.native_bf16("cpu")
    assert all(not f.startswith("-march") for f in hardware.COMPILE_FLAGS[isa])  # never built for "this" CPU


def test_a_lower_isa_can_be_asked_for_but_not_a_higher_one(monkeypatch):
    fake_cpu(monkeypatch, "zen4")
    monkeypatch.setenv("RECURRENT_NATIVE_ISA", "avx2")
    assert hardware.native_isa() == "avx2"
    fake_cpu(monkeypatch, "zen3")
    monkeypatch.setenv("RECURRENT_NATIVE_ISA", "avx512")
    with pytest.raises(ValueError, match="RECURRENT_NATIVE_ISA='avx512': this CPU runs avx2, generic"):
        hardware.native_isa()


@pytest.mark.parametrize("kind, auto", [("zen4", "bf16"), ("sapphire-rapids", "bf16"), ("skylake-x", "fp32"),
                                        ("zen3", "fp32"), ("apple-m2", "bf16"), ("graviton2", "fp32")])
def test_precision_auto_takes_bf16_only_where_it_is_native(monkeypatch, kind, auto):
    fake_cpu(monkeypatch, kind)
    chosen = precision.choose("auto", "cpu")
    assert chosen.name == auto and chosen.requested == "auto"
    assert chosen.dtype == (torch.bfloat16 if auto == "bf16" else None)
    assert precision.choose("fp32", "cpu").name == "fp32"


def test_bf16_where_it_is_emulated_runs_bf16_and_says_fp32_is_faster_once(monkeypatch):
    fake_cpu(monkeypatch, "zen3")
    monkeypatch.setattr(precision, "_warned", set())
    with pytest.warns(UserWarning, match="bf16 is emulated on this CPU .* fp32 is faster on this machine") as caught:
        chosen = precision.choose("bf16", "cpu")
        precision.choose("bf16", "cpu")
    assert len(caught) == 1 and chosen.name == "bf16" and "emulated" in chosen.reason
    fake_cpu(monkeypatch, "zen4")
    monkeypatch.setattr(precision, "_warned", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # native: no warning
        assert precision.choose("bf16", "cpu").name == "bf16"


def test_precision_on_a_gpu_follows_its_compute_capability(monkeypatch):
    monkeypatch.setattr(hardware, "native_bf16", lambda device: torch.device(device).type == "cuda")
    assert precision.choose("auto", "cuda").name == "bf16"
    monkeypatch.setattr(hardware, "native_bf16", lambda device: False)
    assert precision.choose("auto", "cuda").name == "fp32"


def test_a_bad_precision_names_the_value():
    with pytest.raises(UserError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        precision.choose("fp16", "cpu")


def test_the_autocast_context_is_bf16_only_for_bf16():
    with precision.Precision("bf16", "bf16", "asked for").autocast("cpu"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    with precision.Precision("fp32", "auto", "").autocast("cpu"):
        assert not torch.is_autocast_enabled("cpu")


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("the quick brown fox jumps over the lazy dog.\n" * 200)
    return path


@pytest.mark.parametrize("flags, kind, used", [
    ([], "zen3", "fp32"), ([], "zen4", "bf16"), (["--precision", "fp32"], "zen4", "fp32"),
    (["--bf16"], "zen3", "bf16"), (["--precision", "bf16"], "zen3", "bf16")])
def test_train_records_the_precision_asked_and_used(monkeypatch, tmp_path, text_file, flags, kind, used):
    """`auto` is the default; --bf16 is --precision bf16; config.json says what was asked and what ran. (On this
    CPU a faked native-bf16 CPU still runs bf16 correctly: emulated.)"""
    fake_cpu(monkeypatch, kind, runs_here=True)
    out = tmp_path / "run"
    code = main(["train", "lm", "--data", str(text_file), "--cell", "gru", "--hidden-size", "16", "--batch-size", "4",
                 "--bptt", "16", "--max-steps", "3", "--no-progress", "--out", str(out), *flags])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    asked = "bf16" if flags else "auto"
    asked = flags[1] if flags[:1] == ["--precision"] else asked
    assert config["training"]["precision"] == asked and config["precision_used"]["used"] == used


def test_recurrent_info_reports_the_machine_and_auto_choices(monkeypatch, capsys):
    fake_cpu(monkeypatch, "zen3", runs_here=True)
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["versions"]["torch"] == torch.__version__
    assert report["cpu"]["instruction sets"]["avx2"] and not report["cpu"]["instruction sets"]["avx512_f"]
    chosen = report["auto chooses"]
    assert chosen["precision"].startswith("fp32") and chosen["LSTM training"].startswith("fused")
    assert chosen["LSTM generation"].startswith("float32 weights")
    assert {"status", "isa"} <= set(report["native kernels"])
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "instruction sets: avx avx2 fma3" in text and "-avx512_f" in text and "auto chooses:" in text

"""Checkpoints from a file are checked before anything is built (issue 17): a crafted model.json is refused fast and
without allocating, tampered tensors and JSON give one line, the checksum ties the two files of a save, NaN weights
are refused, leftover temporary files are cleaned, and symlinked checkpoint files are never written through."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from recurrent.checkpoint import (CHECKSUM, clean_temp_files, load_checkpoint, open_checkpoint, save_checkpoint,
                                  _temp_path)
from recurrent.cli.main import main
from recurrent.errors import UserError
from recurrent.inference.lm import load_lm
from recurrent.schema import BOUNDS, MODEL_CONFIGS, check_last_meta, check_model_meta, config_schema, validate

TEXT = "the cat sat on the mat\n" * 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real run folder: two steps of `recurrent train lm` (model.* and last.*)."""
    data = tmp_path_factory.mktemp("data") / "tiny.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "lm", "--data", str(data), "--out", str(out), "--hidden-size", "16", "--num-layers", "1",
                 "--batch-size", "4", "--bptt", "8", "--max-steps", "2", "--no-progress"]) == 0
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run, to tamper with."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


def edit_meta(run: Path, change) -> None:
    """Rewrite model.json with change(meta) applied in place (the checksum stays: it covers the tensors file)."""
    meta = json.loads((run / "model.json").read_text())
    change(meta)
    (run / "model.json").write_text(json.dumps(meta))


def resave_tensors(run: Path, change) -> None:
    """Save the best checkpoint again, as save_checkpoint would, with change(tensors) applied."""
    tensors, meta = load_checkpoint(run)
    change(tensors)
    save_checkpoint(run, tensors, meta)


def recurrent(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recurrent", *args], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_one_line(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""  # nothing printed before the refusal (no half a sample)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


# --- a crafted model.json: refused before anything is allocated ---------------------------------------------

PROBE = """
import json, resource, sys, time
from recurrent.errors import UserError
from recurrent.inference.lm import load_lm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load_lm(sys.argv[1])
    message = None
except UserError as e:
    message = str(e)
seconds = time.perf_counter() - start
extra_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"message": message, "seconds": seconds, "extra_mb": extra_mb}))
"""


@pytest.mark.parametrize("field, value, message", [
    ("vocab_size", 2 * 10**7, "model.vocab_size must be <= 10000000, got 20000000"),
    ("num_layers", 10**6, "model.num_layers must be <= 64, got 1000000"),
    ("hidden_size", 10**9, "model.hidden_size must be <= 65536, got 1000000000"),
    ("hidden_size", 65536, ("lacks tensor 'layers.1.cells.0.0.bias_hh' (of shape (262144,)) that the model config "
                            "implies (252 missing in all)")),
])
def test_huge_sizes_are_refused_fast_without_allocating(run, field, value, message):
    """The last case passes the schema (65536 is the cap): the model is then built on the meta device, and its
    shapes refused against the file's header, still without allocating."""
    edit_meta(run, lambda meta: meta["model"].update({field: value}))
    if field == "hidden_size" and value == 65536:
        edit_meta(run, lambda meta: meta["model"].update(num_layers=64))
    probe = subprocess.run([sys.executable, "-c", PROBE, str(run)], check=False, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads(probe.stdout)
    assert result["message"] is not None and message in result["message"]
    assert result["message"].startswith(str(run / "model.json") if "model." in message else str(run))
    assert result["seconds"] < 1.0
    assert result["extra_mb"] < 100


# --- tampering: one line each, through the CLI --------------------------------------------------------------


def test_mis_shaped_tensors_are_one_line(run):
    edit_meta(run, lambda meta: meta["model"].update(hidden_size=32))
    assert_one_line(recurrent("generate", str(run), "--length", "5"),
                    "model.safetensors: tensor 'embedding.weight' has shape (12, 16), but the model config implies "
                    "(12, 32)")


def test_malformed_model_json_is_one_line(run):
    (run / "model.json").write_text("42")
    assert_one_line(recurrent("generate", str(run), "--length", "5"), "model.json: the file must be a JSON object, got 42")
    (run / "model.json").write_text(json.dumps({"model": {"vocab_size": 12}, "vocab": {"level": "char", "itos": []}}))
    with pytest.raises(UserError, match="model.json: vocab.itos holds 0 entries, but model.vocab_size is 12"):
        load_lm(run)  # the fields it lacks take their defaults (a checkpoint older than a field still loads)
    (run / "model.json").write_text(json.dumps({"model": {"vocab_size": 12, "colour": "red"},
                                                "vocab": {"level": "char", "itos": []}}))
    with pytest.raises(UserError, match="model.json: model.colour is not a known field"):
        load_lm(run)


def test_a_classifier_model_section_in_an_lm_run_is_refused(run):
    classifier = {"vocab_size": 12, "num_classes": 2, "structure": "sequence", "cell": "lstm", "embedding_size": 8,
                  "hidden_size": 16, "num_layers": 1, "bidirectional": True, "pooling": "max", "backend": "auto",
                  "dropout": 0.5}
    edit_meta(run, lambda meta: meta.update(model=classifier))
    assert_one_line(recurrent("evaluate", str(run), "--data", str(run / "config.json")),
                    "model.json: its model section is a 'classify' model's, not a 'lm' model's")


def test_a_run_of_another_task_is_refused(run):
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "task": "classify"}))
    with pytest.raises(UserError, match=f"{run} is a 'classify' run \\(its config.json says so\\), not a 'lm' run"):
        load_lm(run)


def test_a_vocabulary_shorter_than_the_model_is_refused(run):
    edit_meta(run, lambda meta: meta["vocab"]["itos"].pop())
    with pytest.raises(UserError, match="model.json: vocab.itos holds 11 entries, but model.vocab_size is 12"):
        load_lm(run)


def test_nan_weights_are_refused(run):
    resave_tensors(run, lambda tensors: tensors["decoder.bias"].__setitem__(3, float("nan")))
    assert_one_line(recurrent("generate", str(run), "--length", "5"), "tensor 'decoder.bias' holds NaN")
    resave_tensors(run, lambda tensors: tensors["decoder.bias"].__setitem__(3, float("inf")))
    with pytest.raises(UserError, match="tensor 'decoder.bias' holds infinite values"):
        load_lm(run)


def test_missing_and_extra_tensors_are_named(run):
    resave_tensors(run, lambda tensors: tensors.update(stray=torch.ones(2)))
    with pytest.raises(UserError, match="holds tensor 'stray', which the model config has no place for"):
        load_lm(run)
    resave_tensors(run, lambda tensors: [tensors.pop(name) for name in ("decoder.bias", "stray")])
    with pytest.raises(UserError, match=r"lacks tensor 'decoder.bias' \(of shape \(12,\)\)"):
        load_lm(run)


def test_a_tensor_of_another_dtype_is_refused(run):
    resave_tensors(run, lambda tensors: tensors.update({"decoder.bias": tensors["decoder.bias"].double()}))
    with pytest.raises(UserError, match="tensor 'decoder.bias' has dtype F64, but the model has float32"):
        load_lm(run)


def test_a_model_the_constructor_refuses_is_one_line(run):
    edit_meta(run, lambda meta: meta["model"].update(cell="no-such-cell"))
    with pytest.raises(UserError, match="model.json: its model section does not describe a model: .*no-such-cell"):
        load_lm(run)


# --- checksums: one save, one pair --------------------------------------------------------------------------


def test_one_flipped_byte_is_caught(run):
    path = run / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's data: the header still parses, the shapes still match
    path.write_bytes(bytes(data))
    assert_one_line(recurrent("generate", str(run), "--length", "5"),
                    f"{path} does not match model.json (its checksum differs): the pair comes from different saves "
                    f"or the file is damaged")


def test_a_pair_from_different_saves_loads_the_newest_or_is_refused(run):
    """What a kill between the two renames leaves: the new tensors beside the old JSON. The tensors file holds its
    own meta, so the newest consistent save loads; a tensors file from elsewhere, without one, is refused."""
    old_json = (run / "model.json").read_text()
    resave_tensors(run, lambda tensors: tensors["decoder.bias"].add_(1))
    new_bias = load_checkpoint(run)[0]["decoder.bias"]
    (run / "model.json").write_text(old_json)
    with pytest.warns(UserWarning, match="a save was interrupted between its two files"):
        assert load_lm(run).model.state_dict()["decoder.bias"].equal(new_bias)
    from safetensors.torch import save_file
    save_file(load_checkpoint(run)[0], run / "model.safetensors")  # the same tensors, saved by another program
    with pytest.raises(UserError, match="its checksum differs"):
        load_lm(run)


def test_a_checkpoint_saved_before_checksums_still_loads(run):
    edit_meta(run, lambda meta: meta.pop(CHECKSUM))
    assert load_lm(run).model.config.hidden_size == 16


def test_the_checksum_is_the_sha256_of_the_tensors_file(tmp_path):
    import hashlib
    save_checkpoint(tmp_path, {"w": torch.arange(3.0)}, {"step": 1})
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta[CHECKSUM] == hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    assert open_checkpoint(tmp_path).meta == {"step": 1}  # the checksum is not part of what load returns
    with pytest.raises(ValueError, match="save_checkpoint's own key"):
        save_checkpoint(tmp_path, {"w": torch.ones(1)}, {CHECKSUM: "x"})


# --- temporary files and symlinks ---------------------------------------------------------------------------


def test_clean_temp_files_removes_only_our_leftovers(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True,
                          text=True)
    dead_pid = int(dead.stdout)  # a process that has exited
    ours = [tmp_path / f".model.safetensors.{dead_pid}.0123abcd.tmp", tmp_path / f".last.json.{dead_pid}.ffff0000.tmp",
            _temp_path(tmp_path, tmp_path / "model.json")]  # this process's own: no save runs while it cleans
    live = tmp_path / f".model.json.{os.getppid()}.0123abcd.tmp"  # a save in flight in a live process
    others = [tmp_path / ".notes.tmp", tmp_path / "model.json", tmp_path / ".model.safetensors.12.xyz.tmp", live]
    for path in ours + others:
        path.write_text("x")
    assert clean_temp_files(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in others)
    assert clean_temp_files(tmp_path / "absent") == 0


def test_a_symlinked_checkpoint_is_never_written_through(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").symlink_to(target)
    with pytest.raises(UserError, match=f"refusing to write {run / 'model.json'}: it is a symbolic link"):
        save_checkpoint(run, {"w": torch.ones(1)}, {})
    assert target.read_text() == "precious"
    assert sorted(p.name for p in run.iterdir()) == ["model.json"]  # nothing written, no temporary file


def test_a_temporary_name_taken_by_a_symlink_is_not_followed(tmp_path, monkeypatch):
    import recurrent.checkpoint as ckpt
    target = tmp_path / "target"
    target.write_text("precious")
    trap = tmp_path / ".model.safetensors.1.00000000.tmp"
    trap.symlink_to(target)
    monkeypatch.setattr(ckpt, "_temp_path", lambda directory, final: trap)
    with pytest.raises(FileExistsError):
        save_checkpoint(tmp_path, {"w": torch.ones(1)}, {})
    assert target.read_text() == "precious"


def test_saved_files_get_the_usual_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        save_checkpoint(tmp_path, {"w": torch.ones(1)}, {})
    finally:
        os.umask(umask)
    for name in ("model.safetensors", "model.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


# --- the schema: bounds checked by brute force, and last.json ----------------------------------------------


@pytest.mark.parametrize("task", sorted(MODEL_CONFIGS))
def test_every_number_of_every_model_config_is_bounded(task):
    """Each numeric field at its cap passes the schema, one step above is refused, naming the field and cap."""
    import dataclasses
    cls = MODEL_CONFIGS[task]
    base = {name: max(value, BOUNDS[name][0]) if name in BOUNDS else value
            for name, value in dataclasses.asdict(cls()).items()}  # the defaults, sizes raised to their minimum
    schema = config_schema(cls)
    for f in dataclasses.fields(cls):
        if f.type not in ("int", "float", int, float):
            continue
        lo, hi = BOUNDS[f.name]
        schema.model_validate({**base, f.name: hi})
        step = 1 if f.type in ("int", int) else 0.5
        for bad, word in ((hi + step, "<="), (lo - step, ">=")):
            with pytest.raises(ValidationError, match="less_than_equal|greater_than_equal") as info:
                schema.model_validate({**base, f.name: bad})
            with pytest.raises(UserError, match=f"x.json: {f.name} must be {word} {hi if word == '<=' else lo}, got"):
                validate(schema, {**base, f.name: bad}, "x.json")
            assert info.value.errors()[0]["loc"] == (f.name,)


def test_model_section_types_are_strict(run):
    meta = json.loads((run / "model.json").read_text())
    for field, value, message in [("hidden_size", "16", "model.hidden_size: input should be a valid integer"),
                                  ("tie_weights", 1, "model.tie_weights: input should be a valid boolean"),
                                  ("dropout", float("nan"), "model.dropout: input should be a finite number"),
                                  ("backend", "warp", "model.backend must be one of 'auto', 'fused'")]:
        with pytest.raises(UserError, match=message):
            check_model_meta({**meta, "model": {**meta["model"], field: value}}, "lm", "m.json")


def test_last_meta_of_a_real_run_passes(trained):
    tensors, meta = load_checkpoint(trained, name="last")
    assert check_last_meta(meta, trained / "last.json", tensors, task="lm") is meta


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("rng"), "last.json: rng is missing"),
    (lambda m: m["position"].update(epoch=0), "position.epoch must be >= 1, got 0"),
    (lambda m: m["position"].update(batch=-1), "position.batch must be >= 0, got -1"),
    (lambda m: m["rng"]["numpy"].__setitem__(2, 700), "rng.numpy.2 must be <= 624, got 700"),
    (lambda m: m["schedule"].update(scale=0.0), "schedule.scale: input should be greater than 0"),
    (lambda m: m["clip"].update(clipped=99), "clip.clipped is 99 and clip.norms holds 2, more than the 2 steps"),
    (lambda m: m.update(carry=["GRUState"]), "carry.0 must be one of 'LSTMState' or 'RNNState'"),
    (lambda m: m.update(carry=["LSTMState", "LSTMState"]), "refers to tensor 'carry.1.0', which"),
    (lambda m: m["rng"].update(cuda_devices=2), "refers to tensor 'rng.cuda.0'"),
    (lambda m: m["model"].update(num_layers=0), "model.num_layers must be >= 1, got 0"),
])
def test_tampered_last_meta_is_one_line(trained, change, message):
    tensors, meta = load_checkpoint(trained, name="last")
    change(meta)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        check_last_meta(meta, trained / "last.json", tensors, task="lm")
    assert "\n" not in str(info.value)

"""The run-folder rules (recurrent/train/run_folder.py) and what the loop does with them: no second writer, no
silent clobbering, no writes through symlinks, no temp files left over, and a resumed run that never replaces a
better saved model with a worse one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from test_loop import Toy, config  # tests/train/test_loop.py: a toy task whose every number is known

from recurrent.checkpoint import load_checkpoint
from recurrent.errors import UserError
from recurrent.train.loop import train
from recurrent.train.run_folder import RunFolder


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    with RunFolder.open(tmp_path / "run", resume=False, overwrite=False):
        with pytest.raises(UserError, match=rf"being written by another training process \(pid {os.getpid()}\)"):
            RunFolder.open(tmp_path / "run", resume=False, overwrite=False)
    RunFolder.open(tmp_path / "run", resume=False, overwrite=False).close()  # free again once closed


def test_a_second_process_is_refused_while_the_first_trains(tmp_path):
    """A real second process (flock is per open file, so this is what two trainers see)."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from recurrent.train.run_folder import "
                               "RunFolder; f = RunFolder.open(sys.argv[1], False, False); print('locked', "
                               "flush=True); time.sleep(60)", str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"pid {holder.pid}\)"):
            train(lambda resumed: Toy(), config(tmp_path), {})
    finally:
        holder.kill()
        holder.wait()
    train(lambda resumed: Toy(), config(tmp_path), {})  # the kernel released the lock with the process


def test_a_folder_holding_another_run_needs_resume_or_overwrite(tmp_path):
    run = train(lambda resumed: Toy(), config(tmp_path, max_steps=2), {"first": True})
    (run / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"holds another run \(config.json\): give --resume .* --overwrite"):
        train(lambda resumed: Toy(), config(tmp_path, overwrite=False), {"second": True})
    assert json.loads((run / "config.json").read_text())["first"]  # untouched
    train(lambda resumed: Toy(), config(tmp_path, overwrite=True, max_steps=1), {"second": True})
    assert "first" not in json.loads((run / "config.json").read_text())
    assert load_checkpoint(run, name="last")[1]["position"]["step"] == 1  # not the old run's 2
    assert (run / "notes.txt").read_text() == "mine"  # --overwrite removes the run's files, nothing else


def test_out_that_is_a_file_or_holds_symlinks_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        train(lambda resumed: Toy(), config(tmp_path, out=str(tmp_path / "file")), {})
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "outside.json"
    outside.write_text("precious")
    (run / "model.json").symlink_to(outside)
    with pytest.raises(UserError, match=r"holds symlinks \(model.json\)"):
        train(lambda resumed: Toy(), config(tmp_path), {})
    assert outside.read_text() == "precious"
    (tmp_path / "link").symlink_to(run, target_is_directory=True)
    with pytest.raises(UserError, match="is a symlink"):
        train(lambda resumed: Toy(), config(tmp_path, out=str(tmp_path / "link")), {})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: run as a user to test this")
def test_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir(mode=0o555)
    with pytest.raises(UserError, match="cannot"):
        train(lambda resumed: Toy(), config(tmp_path, out=str(locked / "run")), {})


def test_temp_files_of_a_dead_save_are_removed_at_the_start(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = run / f".last.safetensors.{dead.stdout.strip()}.0123abcd.tmp"  # the name a save in flight has
    leftover.write_bytes(b"\0" * 1000)
    train(lambda resumed: Toy(), config(tmp_path, max_steps=1), {})
    assert not leftover.exists()


def test_a_resumed_run_never_replaces_a_better_saved_model(tmp_path):
    """The crash the audit found: last.* from step 4 (best 4.0), model.* from step 8 (best 2.5), because the run
    died after its best save. Resuming from step 4 scores 3.5 at step 6: better than last.json knew, worse than the
    saved model, which must stay."""
    run = tmp_path / "run"
    train(lambda resumed: Toy(scores=[5.0, 4.0]), config(tmp_path, epochs=2, eval_every=2, max_steps=4), {})
    stale = tmp_path / "stale"
    shutil.copytree(run, stale)
    train(lambda resumed: Toy(scores=[3.0, 2.5]), config(tmp_path, epochs=2, eval_every=2, max_steps=8, resume=True),
          {})
    assert json.loads((run / "model.json").read_text())["metrics"]["val_loss"] == 2.5
    for name in ("last.json", "last.safetensors"):  # the crash: last.* as it was at step 4
        shutil.copy(stale / name, run / name)
    train(lambda resumed: Toy(scores=[3.5]), config(tmp_path, epochs=2, eval_every=2, max_steps=6, resume=True), {})
    metrics = json.loads((run / "model.json").read_text())["metrics"]
    assert (metrics["val_loss"], metrics["step"]) == (2.5, 8)
    assert load_checkpoint(run, name="last")[1]["position"]["best"] == 2.5


def test_last_is_saved_every_checkpoint_every_steps(tmp_path, monkeypatch):
    import recurrent.train.loop as loop

    saved = []
    real = loop._save_last
    monkeypatch.setattr(loop, "_save_last", lambda run_dir, model, opt, sched, clip, pos, *rest: (
        saved.append(pos.step), real(run_dir, model, opt, sched, clip, pos, *rest)))
    train(lambda resumed: Toy(), config(tmp_path, epochs=3, checkpoint_every=3, max_steps=10), {})
    # every 3 steps, at the start of epochs 2 and 3 (after each epoch's evaluation), and at the end
    assert saved == [3, 4, 6, 8, 9, 10]

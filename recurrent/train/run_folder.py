"""The rules of a run folder, kept by the training loop for every task:

- `train` into a folder that holds another run (its config.json, checkpoints or metrics) is an error, unless
  `--resume` continues it or `--overwrite` replaces it (the old run's files are removed first, so a new config never
  sits beside an old model);
- one writer at a time: an exclusive lock (fcntl.flock on `.lock`, released by the kernel when the process ends,
  however it ends) refuses a second trainer with a one-line error naming the holder's pid;
- writes never follow symlinks: a run folder that is a symlink, or holds one, is refused;
- temporary files a crashed run left behind (checkpoint writes that never got renamed) are removed at the start.

    with RunFolder.open("runs/x", resume=False, overwrite=False) as folder:
        ...  # train, writing into folder.path
"""
from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from recurrent.checkpoint import clean_temp_files
from recurrent.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer is then the user's to keep
    fcntl = None

LOCK = ".lock"
# What a run writes: a folder holding any of these holds a run.
RUN_FILES = ("config.json", "model.safetensors", "model.json", "last.safetensors", "last.json", "metrics.jsonl",
             "loss.png")
RUN_FOLDERS = ("tensorboard",)


class RunFolder:
    """A run folder opened for writing by this process (rank 0 of a multi-process run): made, checked, locked."""

    def __init__(self, path: Path, lock_fd: int | None):
        self.path, self._lock_fd = path, lock_fd

    @classmethod
    def open(cls, out, resume: bool, overwrite: bool) -> RunFolder:
        path = Path(out)
        if path.is_symlink():
            raise UserError(f"--out {path} is a symlink: a run folder must be a real folder (writes never follow "
                            f"symlinks)")
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {path} exists and is not a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the run folder {path}: {e.strerror}") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"cannot write in the run folder {path}: permission denied")
        links = sorted(p.name for p in path.iterdir() if p.is_symlink())
        if links:
            raise UserError(f"the run folder {path} holds symlinks ({', '.join(links)}): refusing to write "
                            f"through them; remove them or choose another --out")
        held = _holds_run(path)
        if held and not (resume or overwrite):  # refused before the lock, which would write in the folder
            raise UserError(f"{path} holds another run ({held}): give --resume to continue it, --overwrite to "
                            f"replace it, or another --out")
        folder = cls(path, _lock(path))
        try:
            if overwrite and not resume:
                folder.clear()
            clean_temp_files(path)
        except BaseException:
            folder.close()
            raise
        return folder

    def clear(self) -> None:
        """Remove the files of the run this folder held (--overwrite); anything else in it is left alone."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(self.path / name, ignore_errors=True)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _holds_run(path: Path) -> str | None:
    """The first run file a folder holds, or None."""
    for name in (*RUN_FILES, *RUN_FOLDERS):
        if (path / name).exists():
            return name
    return None


def _lock(path: Path) -> int | None:
    """An exclusive lock on path/.lock, held until the descriptor is closed or the process ends; UserError if
    another process holds it. The file records the holder's pid, for the message."""
    if fcntl is None:
        return None
    lock_path = path / LOCK
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"{lock_path} is a symlink: refusing to write through it") from None
        raise UserError(f"cannot write in the run folder {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise UserError(f"{path} is being written by another training process (pid {holder}): wait for it to "
                        f"finish, or choose another --out") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd

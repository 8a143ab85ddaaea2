"""Errors a user can act on. The CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(ValueError):
    """Bad input from the user: a malformed file (name it, with the line), a bad flag, empty data."""


class Interrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM after saving its last checkpoint (recurrent/train/loop.py). The CLI
    prints the message and exits 128 + signum (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum, self.message = int(signum), message

"""Errors a user can act on. The CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(ValueError):
    """Bad input from the user: a malformed file (name it, with the line), a bad flag, empty data."""

"""The one base class for expected errors: the CLI prints their message on one line and exits 1."""


class UserError(Exception):
    """Something the user can fix (a bad setting, a missing file); the message says what and how."""

"""Errors that reach the user as one line and exit status 2."""


class UserError(Exception):
    """A problem with what the user asked for (bad input, bad config, missing path).

    The CLI prints ``error: <message>`` on one line and exits with status 2.
    """


class ConfigError(UserError):
    """An architecture description or search space that is malformed or invalid."""


class DiskFullError(UserError):
    """No space left (or quota exceeded) while writing results: free space, then resume."""

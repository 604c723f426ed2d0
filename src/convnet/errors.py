"""Errors meant for users: each message is one sentence saying what is wrong and what to do.

The CLI prints them without a traceback and exits with status 2; anything else is a bug.
"""


class ConvnetError(ValueError):
    """Base of every user-facing error."""


class DataError(ConvnetError):
    """Missing, empty or unreadable data."""


class SpecError(ConvnetError):
    """An architecture spec string that cannot be parsed or does not fit the input."""


class CheckpointError(ConvnetError):
    """A model or run file that is missing, unreadable or not convnet's."""


class ConfigError(ConvnetError):
    """Settings that contradict each other or the data."""

"""Errors meant for users: each message is one sentence saying what is wrong and what to do.

The CLI prints them without a traceback and exits with status 2; anything else is a bug.
"""
from collections.abc import Callable
from string import Template


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


class SettingError(SpecError):
    """A setting out of range, its names carried as data: the message is a `string.Template` whose
    `$names` are the settings' keyword names (`$pool_stride`). str() names them so; each front end
    names them its own way with `phrase` (the CLI as its flags, --pool-stride; the server as its
    query parameters)."""

    def __init__(self, template: str):
        self.template = Template(template)
        super().__init__(self.phrase(lambda name: name))

    def phrase(self, name: Callable[[str], str]) -> str:
        """The message with each setting written as `name(setting)`."""
        return self.template.substitute(_Names(name))


class _Names(dict):
    """A mapping from every setting to `name(setting)` (Template.get_identifiers needs Python 3.11)."""

    def __init__(self, name: Callable[[str], str]):
        super().__init__()
        self.name = name

    def __missing__(self, setting: str) -> str:
        return self.name(setting)

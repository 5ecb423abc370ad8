"""The project's exceptions: a small tree whose messages a user can act on.

    NewswatchError
     ├── ConfigError          bad settings or a bad topics file
     ├── InvalidInput         a value given on the command line is not usable
     ├── NotFound             an id or URL names nothing stored
     └── StorageUnavailable   the database cannot be reached

The CLI prints `str(error)` on one line and exits non-zero; nothing else is shown.
"""


class NewswatchError(Exception):
    """Root of every error newswatch raises on purpose."""


class ConfigError(NewswatchError):
    """Settings or data files are invalid."""


class InvalidInput(NewswatchError):
    """A user-supplied value cannot be used."""


class NotFound(NewswatchError):
    """The thing asked for is not stored."""


class StorageUnavailable(NewswatchError):
    """The database cannot be reached or opened."""

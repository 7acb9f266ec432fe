"""Expected failures of the model library; the CLI turns them into one line and exit status 2.

This package imports nothing from the pipeline (`jobs/`): the two sides share files and exit
statuses only (2 = bad data or configuration, retrying cannot help).
"""

from __future__ import annotations


class Gru4RecError(Exception):
    """Base class: an expected failure whose message is meant for the person running it."""


class ConfigError(Gru4RecError):
    """Parameters or options are invalid or inconsistent."""


class NoInputError(Gru4RecError):
    """The input a command needs does not exist or is empty."""


class SchemaError(Gru4RecError):
    """Input lacks required columns, has unusable types, or breaks a contract."""

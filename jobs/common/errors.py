"""Errors for bad input or configuration; `run_main` turns them into one clear line."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: an expected failure whose message is meant for the person running the job."""


class SchemaError(PipelineError):
    """Input lacks required columns or has columns of an unusable type."""


class ConfigError(PipelineError):
    """Options or a mapping file are inconsistent or invalid."""


class NoInputError(PipelineError):
    """The input a job needs does not exist or is empty."""


class SessionAccountError(PipelineError):
    """Sessionize's conservation account does not balance: events would be lost unnamed."""

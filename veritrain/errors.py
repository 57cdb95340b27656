"""The error types every layer shares; each message is one line saying what is wrong and what to do."""

from __future__ import annotations


class TrainingError(ValueError):
    """A training run cannot start or continue; the message says what is wrong and what to do."""


class ConfigError(TrainingError):
    """An option has an invalid value (raised by `TrainConfig.validate`, the one validation entry point)."""


class MissingExtraError(ValueError):
    """An optional dependency is not installed; the message names the extra: pip install 'veritrain[EXTRA]'."""


__all__ = ["ConfigError", "MissingExtraError", "TrainingError"]

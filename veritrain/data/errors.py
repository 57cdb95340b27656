"""The one error type of `veritrain.data`."""

from __future__ import annotations


class DataError(RuntimeError):
    """A data set is missing, corrupt or out of range. The message is one line: what is wrong, what to do."""

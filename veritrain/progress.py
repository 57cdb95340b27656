"""Progress bars only where someone watches: on a terminal. Redirected to a file, a bar would write one
line per refresh (the log floods); there the callers print a plain line per epoch instead."""

from __future__ import annotations

import sys
from typing import Any, Iterable


def on_terminal() -> bool:
    """Whether stderr (where bars and epoch lines go) is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress_bar(
    iterable: Iterable[Any] | None = None, *, enabled: bool = True, desc: str = "", total: int | None = None
) -> Any:
    """A tqdm bar on stderr, disabled unless `enabled` and stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(
        iterable,
        desc=desc,
        total=total,
        disable=not (enabled and on_terminal()),
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


__all__ = ["on_terminal", "progress_bar"]

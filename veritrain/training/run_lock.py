"""An exclusive lock on a run folder, so that two trainings (or a training and an evaluation writing into
the folder) never interleave their files.

The lock is the file `RunFiles.LOCK` (`RUN/run.lock`) holding the owner's pid, host, purpose and start time, created
atomically with its content (written to a temporary file, then hard-linked to the lock name, which fails
when the lock exists). A lock whose process no longer runs on this host is stale and is taken over; a live
one gives a one-line `RunLockedError` naming the owner.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from veritrain.errors import TrainingError
from veritrain.training.run_dir import RunFiles

LOCK_NAME = RunFiles.LOCK


class RunLockedError(TrainingError):
    """The run folder is locked by a live process."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_stale(owner: dict[str, Any] | None) -> bool:
    if owner is None:  # unreadable: a lock file is written whole, so this is not one of ours in progress
        return True
    if owner.get("host") != socket.gethostname():
        return False  # cannot tell: only the user can
    try:
        pid = int(owner["pid"])
    except (KeyError, TypeError, ValueError):
        return True
    return pid != os.getpid() and not _alive(pid)


def acquire(folder: str | os.PathLike[str], purpose: str) -> Path:
    """Create `folder/run.lock` for this process; RunLockedError when a live process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "purpose": purpose,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    mask = os.umask(0)
    os.umask(mask)
    for _ in range(3):
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".run.lock.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(info) + "\n")
            os.chmod(tmp, 0o666 & ~mask)
            try:
                os.link(tmp, path)  # atomic and exclusive: fails when the lock exists
                return path
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        owner = _read(path)
        if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == info["host"]:
            raise RunLockedError(f"{folder} is already locked by this process ({owner.get('purpose')})")
        if owner is not None and not _is_stale(owner):
            raise RunLockedError(
                f"{folder} is in use by process {owner.get('pid')} on {owner.get('host')} "
                f"({owner.get('purpose')} since {owner.get('started')}); wait for it to finish or use another "
                f"folder (if no such process runs, delete {path})"
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # stale: its owner is gone
    raise RunLockedError(f"could not lock {folder}: {path} keeps reappearing; another process is starting there")


def release(path: Path) -> None:
    """Remove the lock if this process still owns it."""
    owner = _read(path)
    if owner is not None and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike[str], purpose: str) -> Iterator[Path]:
    """Hold the exclusive lock of a run folder for the duration of the block."""
    path = acquire(folder, purpose)
    try:
        yield path
    finally:
        release(path)


__all__ = ["LOCK_NAME", "RunLockedError", "acquire", "release", "run_lock"]

"""Files written whole or not at all: a temporary file beside the target, fsynced, renamed
over it; and the temporary files a launcher killed mid-write left behind."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from stack import procs


def pickle_dump(obj: object, file: BinaryIO) -> None:
    """What localstripe's own Store.dump_to_disk writes."""
    pickle.dump(obj, file, protocol=pickle.HIGHEST_PROTOCOL)


def temp_path(path: Path, pid: int | None = None) -> Path:
    """Where the launcher with this pid writes before renaming over `path`."""
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


def atomic_dump(obj: object, path: Path, dump: Callable[[object, BinaryIO], None],
                *, temp: Path) -> None:
    """Writes obj to temp, then renames it over path: path is always whole."""
    try:
        with open(temp, "wb") as file:
            dump(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def sweep_temp_files(path: Path) -> list[Path]:
    """Removes what launchers killed mid-write left beside path (not a live one's)."""
    removed = []
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = temp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and not procs.alive(int(pid)):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed




def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""The one atomic write of the package: packed files, sweep results and the files the sweep keeps.

Plain python (the torch-free analysis imports it too).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable


def write_atomically(path: str | os.PathLike, parts: Iterable[bytes]) -> None:
    """Write ``parts`` to a temporary file beside ``path``, flushed to disk, and rename it over ``path``: a reader,
    or a process killed mid-write, sees the old file or the new one, never half of one. The file gets the
    permissions of any new file (the umask's), not the temporary file's owner-only ones."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(descriptor, 0o666 & ~umask)
        with os.fdopen(descriptor, "wb") as file:
            for part in parts:
                file.write(part)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise

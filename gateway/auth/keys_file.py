"""Reading and writing the keys file as a TOML document: atomic, locked, change-detectable.

This module knows TOML and files, not keys (``keys.py`` gives the entries their meaning).
Writers take an exclusive ``flock`` on a sibling ``<file>.lock`` for the whole
read-modify-write, so two ``voxwire keys create`` at once both land; they replace the file with
``os.replace`` of a fully written and fsynced temporary file in the same directory (POSIX
rename is atomic), so a reader (the gateway's reload) sees either the old or the new file,
never a half-written one. Readers take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

HEADER = (
    "# voxwire API keys: SHA-256 hashes only, never a key in clear.\n"
    "# Written by `voxwire keys create|revoke` (atomically); the gateway reloads it on change.\n"
)


class KeysFileError(Exception):
    """The keys file cannot be read, parsed or written, or an entry in it is invalid."""


@dataclass(frozen=True, slots=True)
class FileSignature:
    """What identifies one version of the file: a rename changes the inode, an edit in place
    the size or the modification time."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileSignature:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def stat_signature(path: Path) -> FileSignature:
    """The signature of the file now.

    Raises:
        KeysFileError: the file cannot be stat'ed (missing, no permission).
    """
    try:
        return FileSignature.of(os.stat(path))
    except OSError as exc:
        raise KeysFileError(f"keys file {path}: {exc.strerror or exc}") from exc


def read_document(path: Path) -> tuple[dict[str, Any], FileSignature]:
    """The parsed document and the signature of the very version that was read.

    Raises:
        KeysFileError: missing, unreadable, or not valid TOML.
    """
    try:
        with open(path, "rb") as f:
            signature = FileSignature.of(os.fstat(f.fileno()))
            data = f.read()
    except OSError as exc:
        raise KeysFileError(f"keys file {path}: {exc.strerror or exc}") from exc
    try:
        return tomllib.loads(data.decode("utf-8")), signature
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise KeysFileError(f"keys file {path} is not valid TOML: {exc}") from exc


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the writers' lock of ``path`` (an exclusive flock on ``<path>.lock``).

    Raises:
        KeysFileError: the lock file cannot be created.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise KeysFileError(f"keys file lock {lock_path}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def write_document(path: Path, document: dict[str, Any]) -> None:
    """Replace the file with ``document`` atomically, keeping the old file's mode (new: 0600).

    Raises:
        KeysFileError: the directory is not writable, or the document is not serializable.
    """
    try:
        text = HEADER + "\n" + tomli_w.dumps(document)
    except (TypeError, ValueError) as exc:
        raise KeysFileError(f"keys file {path}: cannot serialize: {exc}") from exc
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = 0o600
    except OSError as exc:
        raise KeysFileError(f"keys file {path}: {exc.strerror or exc}") from exc
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise KeysFileError(f"keys file {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeysFileError(f"keys file {path}: {exc.strerror or exc}") from exc
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    # The rename itself is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

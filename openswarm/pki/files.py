"""Reading and writing PKI files: atomic writes, private keys at mode 0600."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from openswarm.pki.errors import PkiError

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def read_bytes(path: Path, what: str) -> bytes:
    """Read a file, raising PkiError that names `what` and the path if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise PkiError(f"{what} is a directory, expected a file: {path}") from None
    except OSError as exc:
        raise PkiError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def write_atomic(path: Path, data: bytes, *, mode: int = PUBLIC_MODE) -> None:
    """Write `data` to `path` via a temporary file and rename; the file gets `mode`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PkiError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (a private key) readable by its owner only (mode 0600)."""
    write_atomic(path, data, mode=PRIVATE_MODE)


def make_dir(path: Path) -> Path:
    """Create a folder (and parents), raising PkiError if that fails."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"cannot create folder {path}: {exc.strerror or exc}") from None
    return Path(path)

"""Program bundles: a task's files, addressed by their content.

A bundle is the regular files under a program folder (`__pycache__` and dot-folders left
out), each named by its '/'-separated path and the sha256 of its bytes; its digest is the
sha256 of that list in canonical JSON, so the same files give the same digest on every
machine, and any changed byte gives another. Only the digest and the list go on the ledger
(in the task); the files themselves travel apart and are checked against it on arrival.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Any

from openswarm.ledger.tasks import MAX_BUNDLE_BYTES, bundle_digest

_SKIPPED = ("__pycache__",)


class BundleError(ValueError):
    """A program folder that cannot be a bundle; the message names the file and the fix."""


def bundle_of(folder: Path | str, limit: int = MAX_BUNDLE_BYTES) -> dict[str, Any]:
    """`{digest, size, files}` of the program folder `folder`."""
    root = Path(folder)
    if not root.is_dir():
        raise BundleError(f"program folder {root} does not exist or is not a folder")
    files: dict[str, str] = {}
    size = 0
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(p in _SKIPPED or p.startswith(".") for p in relative.parts):
            continue
        if path.is_symlink():
            raise BundleError(f"{path} is a symbolic link; a bundle holds regular files only "
                              "(copy the file in)")  # fmt: skip
        if path.is_dir():
            continue
        if not path.is_file():
            raise BundleError(f"{path} is not a regular file")
        name = relative.as_posix()
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise BundleError(f"{path!r}: a bundle's file names must be UTF-8") from None
        if unicodedata.normalize("NFC", name) != name:
            raise BundleError(f"{path}: write its name in Unicode NFC form, so that every "
                              "system gives the bundle the same digest")  # fmt: skip
        data = path.read_bytes()
        size += len(data)
        if size > limit:
            raise BundleError(f"program folder {root} holds more than {limit} bytes; a bundle "
                              "carries code and small files, not data")  # fmt: skip
        files[name] = hashlib.sha256(data).hexdigest()
    if not files:
        raise BundleError(f"program folder {root} holds no files")
    return {"digest": bundle_digest(files), "size": size, "files": files}


__all__ = ["BundleError", "bundle_digest", "bundle_of"]

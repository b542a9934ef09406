"""Program bundles: a task's files, addressed by their content.

A bundle is the regular files under a program folder (`__pycache__` and dot-folders left
out), each named by its '/'-separated path and the sha256 of its bytes; its digest is the
sha256 of that list in canonical JSON, so the same files give the same digest on every
machine, and any changed byte gives another. Only the digest and the list go on the ledger
(in the task); the files themselves travel apart and are checked against it on arrival.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from openswarm.ledger.blobs import PIECE_BYTES
from openswarm.ledger.client import LedgerClient, LedgerError
from openswarm.ledger.tasks import MAX_BUNDLE_BYTES, bundle_digest
from openswarm.pki import Identity

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


def push_bundle(endpoints: list[str], identity: Identity, folder: Path | str,
                bundle: Mapping[str, Any]) -> dict[str, str | None]:  # fmt: skip
    """Upload the files of `bundle` (from `folder`) to each ledger node at `endpoints`;
    endpoint -> None (stored) or why not. BundleError if no node took them all."""
    root = Path(folder)
    outcome: dict[str, str | None] = {}
    for endpoint in endpoints:
        try:
            with LedgerClient([endpoint], identity, timeout_s=30) as client:
                for path, digest in sorted(bundle["files"].items()):
                    _upload(client, (root / path).read_bytes(), digest)
            outcome[endpoint] = None
        except (LedgerError, OSError) as exc:
            outcome[endpoint] = str(exc)
    if all(why is not None for why in outcome.values()):
        raise BundleError("no ledger node took the program bundle: " + "; ".join(
            f"{e}: {why}" for e, why in outcome.items()))  # fmt: skip
    return outcome


def _upload(client: LedgerClient, data: bytes, digest: str) -> None:
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(f"a file with digest {digest[:12]}… changed since the bundle was made")
    offset = 0
    while True:
        piece = data[offset : offset + PIECE_BYTES]
        text = base64.b64encode(piece).decode("ascii")
        request = {"digest": digest, "size": len(data), "offset": offset, "data": text}
        answer = client.call("PutBlob", request)
        if answer.get("done"):
            return
        offset += len(piece)


def fetch_bundle(client: LedgerClient, bundle: Mapping[str, Any], dest: Path) -> None:
    """Write the files of `bundle` (`{digest, size, files}`, as the ledger recorded it) under
    `dest`, each checked against its digest, from whichever ledger node of `client` holds
    it; BundleError names a file no node could give with the right bytes."""
    if bundle_digest(bundle["files"]) != bundle["digest"]:
        raise BundleError("the bundle's file list does not match its digest")
    root = dest.resolve()
    with contextlib.ExitStack() as stack:  # one connection per node, for all the files
        nodes = [stack.enter_context(LedgerClient([e], client.identity, timeout_s=30))
                 for e in client.endpoints]  # fmt: skip
        for path, digest in sorted(bundle["files"].items()):
            target = (root / path).resolve()
            if root not in target.parents:
                raise BundleError(f"bundle path {path!r} leads outside the bundle folder")
            data = _download(nodes, path, digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(target.name + ".part")
            temporary.write_bytes(data)
            os.replace(temporary, target)


def _download(nodes: list[LedgerClient], path: str, digest: str) -> bytes:
    """File `digest` from the first node that gives bytes matching it."""
    problems = []
    for node in nodes:
        endpoint = node.endpoints[0]
        try:
            data = bytearray()
            while True:
                answer = node.call("GetBlob", {"digest": digest, "offset": len(data)})
                piece = base64.b64decode(answer["data"], validate=True)
                size = int(answer["size"])
                if size > MAX_BUNDLE_BYTES:
                    raise BundleError(f"{endpoint} offers {size} bytes")
                data += piece
                if len(data) >= size or not piece:
                    break
        except (LedgerError, BundleError, ValueError, KeyError) as exc:
            problems.append(f"{endpoint}: {exc}")
            continue
        if hashlib.sha256(data).hexdigest() == digest:
            return bytes(data)
        problems.append(f"{endpoint}: its bytes do not match the digest on the ledger")
    raise BundleError(f"bundle file {path} ({digest[:12]}…): " + "; ".join(problems))


__all__ = ["BundleError", "bundle_digest", "bundle_of", "fetch_bundle", "push_bundle"]

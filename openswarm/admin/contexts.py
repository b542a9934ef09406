"""Admin contexts: named pairs of ledger endpoints and an admin identity, kept in a user
config file, so that admin commands need neither `--connect` nor `--identity` each time.

The file is YAML (`$OPENSWARM_CONTEXTS`, else `$XDG_CONFIG_HOME/openswarm/contexts.yaml`,
else `~/.config/openswarm/contexts.yaml`): the contexts by name and which one is current.
A context is checked when it is added (its endpoints are host:port, its identity folder
holds an admin identity) and again when it is used, so a moved or replaced folder is named
instead of failing deep inside a TLS handshake.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from openswarm.pki import Identity, PkiError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ContextError(ValueError):
    """A context that cannot be stored or used; the message names the fix."""


@dataclass(frozen=True)
class Context:
    """Where a swarm's ledger is and which admin identity talks to it."""

    name: str
    ledger: tuple[str, ...]
    identity: Path

    def to_dict(self) -> dict[str, Any]:
        return {"ledger": list(self.ledger), "identity": str(self.identity)}


def contexts_file() -> Path:
    """Where the contexts are kept (see the module docstring)."""
    named = os.environ.get("OPENSWARM_CONTEXTS")
    if named:
        return Path(named).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "openswarm" / "contexts.yaml"


def check_endpoints(ledger: str | Sequence[str]) -> tuple[str, ...]:
    """`HOST:PORT[,HOST:PORT…]` (or a list of them) as a tuple, each checked."""
    items = ledger.split(",") if isinstance(ledger, str) else list(ledger)
    endpoints = tuple(str(e).strip() for e in items if str(e).strip())
    if not endpoints:
        raise ContextError("give the ledger as HOST:PORT[,HOST:PORT…] (one node at least)")
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ContextError(f"ledger endpoint {endpoint!r} is not HOST:PORT (port 1-65535)")
    return endpoints


def check_admin_identity(folder: Path | str) -> Path:
    """The absolute path of an identity folder that holds an admin identity."""
    path = Path(folder).expanduser().resolve()
    try:
        identity = Identity.load(path)
    except PkiError as exc:
        raise ContextError(f"identity folder {path}: {exc}") from None
    if identity.role != "admin":
        raise ContextError(
            f"identity folder {path} holds a {identity.role} identity ({identity.name}); admin "
            "commands need one issued with 'openswarm pki issue NAME --role admin'"
        )
    return path


class ContextStore:
    """The contexts in one file: add, remove, choose the current one, resolve one."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or contexts_file()

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"current": None, "contexts": {}}
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ContextError(f"cannot read the contexts file {self.path}: {exc}") from None
        contexts = data.get("contexts") if isinstance(data, dict) else None
        current = data.get("current") if isinstance(data, dict) else None
        if not isinstance(contexts, dict) or not isinstance(current, str | None) or not all(
            isinstance(v, dict) and isinstance(v.get("identity"), str)
            and isinstance(v.get("ledger"), list | str) and v.get("ledger")
            for v in contexts.values()
        ):  # fmt: skip
            raise ContextError(
                f"the contexts file {self.path} is not one openswarm wrote (contexts: "
                "NAME: {ledger, identity}); fix or remove it"
            )
        return {"current": current, "contexts": contexts}

    def _write(self, data: dict[str, Any]) -> None:
        """Write the file whole (a reader never sees half of it), readable by its owner."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(data, sort_keys=True)
        handle, temporary = tempfile.mkstemp(prefix=".contexts-", dir=self.path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.chmod(temporary, 0o600)
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def add(self, name: str, ledger: str | Sequence[str], identity: Path | str,
            use: bool = False) -> Context:  # fmt: skip
        """Store a context (replacing one of that name); the first one becomes current."""
        if not _NAME.fullmatch(name):
            raise ContextError(
                f"context name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-'"
            )
        context = Context(name, check_endpoints(ledger), check_admin_identity(identity))
        data = self._read()
        data["contexts"][name] = context.to_dict()
        if use or data["current"] not in data["contexts"]:
            data["current"] = name
        self._write(data)
        return context

    def remove(self, name: str) -> None:
        data = self._read()
        if name not in data["contexts"]:
            raise ContextError(self._unknown(name, data))
        del data["contexts"][name]
        if data["current"] == name:
            data["current"] = None
        self._write(data)

    def use(self, name: str) -> Context:
        data = self._read()
        if name not in data["contexts"]:
            raise ContextError(self._unknown(name, data))
        data["current"] = name
        self._write(data)
        return self.get(name)

    def names(self) -> list[str]:
        return sorted(self._read()["contexts"])

    @property
    def current(self) -> str | None:
        return self._read()["current"]

    def get(self, name: str | None = None) -> Context:
        """Context `name` (None: the current one), checked again."""
        data = self._read()
        chosen = name or data["current"]
        if chosen is None:
            raise ContextError(
                "no context is chosen: add one with 'openswarm context add NAME --ledger "
                "HOST:PORT --identity ADMIN_FOLDER' (or give --connect and --identity)"
            )
        if chosen not in data["contexts"]:
            raise ContextError(self._unknown(chosen, data))
        raw = data["contexts"][chosen]
        return Context(
            chosen, check_endpoints(raw["ledger"]), check_admin_identity(raw["identity"])
        )

    def _unknown(self, name: str, data: dict[str, Any]) -> str:
        known = ", ".join(sorted(data["contexts"])) or "none yet"
        return f"no context named {name!r} in {self.path} (known: {known})"


def resolve(connect: str | None, identity: Path | str | None,
            context: str | None = None) -> tuple[tuple[str, ...], Path]:  # fmt: skip
    """The ledger endpoints and identity folder an admin command uses: `connect`, else the
    context's; `identity`, else $OPENSWARM_IDENTITY, else the context's. The context is
    `context` (None: the current one), read only when something is missing. ContextError
    names what is."""
    given = identity or os.environ.get("OPENSWARM_IDENTITY")
    if connect and given:
        return check_endpoints(connect), Path(given)
    chosen = ContextStore().get(context)
    endpoints = check_endpoints(connect) if connect else chosen.ledger
    return endpoints, Path(given) if given else chosen.identity


__all__ = ["Context", "ContextError", "ContextStore", "check_endpoints", "contexts_file",
           "resolve"]  # fmt: skip

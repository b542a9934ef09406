"""An operator's config file: which ledger, which identities, what the site allows and
where its private data is. Checked whole when the operator starts, so a mistake is named
before anything runs.

    ledger: [198.51.100.1:7001, 198.51.100.2:7001]
    identity: /etc/openswarm/operator-a      # issued with --role operator
    peer_identity: /etc/openswarm/site-a     # --role peer: what this site's runs train as
    work_dir: /var/lib/openswarm/operator    # bundles, environments and logs of the runs
    private_data: {mnist: /data/mnist}       # the only folders a task may be given
    allow: [<bundle digest>, …]              # the bundles this site runs …
    allow_admin_approved: false              # … or any bundle of a task the ledger recorded
    listen: 0.0.0.0:7100                     # where a run's peer serves models
    advertise: 198.51.100.1                  # the address other sites dial
    package_index: https://pypi.example/simple   # or find_links: /srv/wheels (no index)
    heartbeat_s: 10
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from openswarm.pki import Identity, PkiError

KEYS = (
    "advertise",
    "allow",
    "allow_admin_approved",
    "find_links",
    "heartbeat_s",
    "host",
    "identity",
    "ledger",
    "listen",
    "package_index",
    "peer_identity",
    "poll_s",
    "private_data",
    "work_dir",
)
_DIGEST = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class OperatorConfigError(ValueError):
    """An operator config that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class OperatorConfig:
    """A checked operator config (see the module docstring)."""

    ledger: tuple[str, ...]
    identity: Identity
    peer_identity: Identity
    work_dir: Path
    private_data: dict[str, Path] = field(default_factory=dict)
    allow: frozenset[str] = frozenset()
    allow_admin_approved: bool = False
    listen: str = "127.0.0.1:0"
    advertise: str | None = None
    package_index: str | None = None
    find_links: Path | None = None
    heartbeat_s: float = 10.0
    poll_s: float = 1.0
    host: str = field(default_factory=socket.gethostname)

    def allows(self, digest: str) -> bool:
        """Whether this site runs the bundle `digest` (of a task the ledger recorded)."""
        return self.allow_admin_approved or digest in self.allow

    @classmethod
    def load(cls, path: Path | str) -> OperatorConfig:
        source = Path(path)
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise OperatorConfigError(f"cannot read operator config {source}: {exc}") from None
        if not isinstance(raw, dict):
            raise OperatorConfigError(
                f"operator config {source} must be a mapping of {', '.join(KEYS)}"
            )
        return cls.from_dict(raw, base=source.parent, source=str(source))

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], *, base: Path = Path("."), source: str = "operator config"
    ) -> OperatorConfig:
        unknown = sorted(str(k) for k in raw if k not in KEYS)
        if unknown:
            raise OperatorConfigError(
                f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(KEYS)}"
            )

        def folder(key: str, value: Any) -> Path:
            if not isinstance(value, str) or not value:
                raise OperatorConfigError(f"{source}: '{key}' must name a folder")
            return (base / Path(value).expanduser()).resolve()

        ledger = raw.get("ledger")
        if isinstance(ledger, str):
            ledger = [e.strip() for e in ledger.split(",") if e.strip()]
        if (
            not isinstance(ledger, list)
            or not ledger
            or not all(isinstance(e, str) and e.rpartition(":")[2].isdigit() for e in ledger)
        ):
            raise OperatorConfigError(f"{source}: 'ledger' must list the ledger nodes as HOST:PORT")
        identity = _identity(
            source, "identity", folder("identity", raw.get("identity")), "operator"
        )
        peer = _identity(
            source, "peer_identity", folder("peer_identity", raw.get("peer_identity")), "peer"
        )
        if identity.info.swarm != peer.info.swarm:
            raise OperatorConfigError(
                f"{source}: identity is of swarm {identity.info.swarm!r} "
                f"but peer_identity of {peer.info.swarm!r}"
            )
        data = raw.get("private_data") or {}
        if not isinstance(data, dict):
            raise OperatorConfigError(f"{source}: 'private_data' maps names to folders")
        private = {}
        for name, value in data.items():
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise OperatorConfigError(
                    f"{source}: private_data name {name!r} must be letters, digits, '.', '_' or '-'"
                )
            private[name] = folder(f"private_data.{name}", value)
            if not private[name].is_dir():
                raise OperatorConfigError(
                    f"{source}: private_data {name} is {private[name]}, which is not a folder"
                )
        allow = raw.get("allow") or []
        if not isinstance(allow, list) or not all(
            isinstance(d, str) and _DIGEST.fullmatch(d) for d in allow
        ):
            raise OperatorConfigError(
                f"{source}: 'allow' lists bundle digests (64 hex "
                "characters, as 'openswarm task show' prints them)"
            )
        approved = raw.get("allow_admin_approved", False)
        if not isinstance(approved, bool):
            raise OperatorConfigError(f"{source}: 'allow_admin_approved' is true or false")
        if not allow and not approved:
            raise OperatorConfigError(
                f"{source}: this operator would run nothing: list the bundle digests this site "
                "runs under 'allow', or set 'allow_admin_approved: true' to run any bundle of a "
                "task the swarm's admins recorded"
            )
        index, links = raw.get("package_index"), raw.get("find_links")
        if index is not None and links is not None:
            raise OperatorConfigError(f"{source}: give package_index or find_links, not both")
        if index is not None and (not isinstance(index, str) or "://" not in index):
            raise OperatorConfigError(f"{source}: package_index must be a URL")
        return cls(
            ledger=tuple(ledger),
            identity=identity,
            peer_identity=peer,
            work_dir=folder("work_dir", raw.get("work_dir")),
            private_data=private,
            allow=frozenset(allow),
            allow_admin_approved=approved,
            listen=_text(source, raw, "listen", "127.0.0.1:0"),
            advertise=raw.get("advertise") and _text(source, raw, "advertise", ""),
            package_index=index,
            find_links=None if links is None else folder("find_links", links),
            heartbeat_s=_seconds(source, raw, "heartbeat_s", 10.0),
            poll_s=_seconds(source, raw, "poll_s", 1.0),
            host=_text(source, raw, "host", socket.gethostname()),
        )


def _identity(source: str, key: str, folder: Path, role: str) -> Identity:
    try:
        identity = Identity.load(folder)
    except PkiError as exc:
        raise OperatorConfigError(f"{source}: {key} {folder}: {exc}") from None
    if identity.role != role:
        raise OperatorConfigError(
            f"{source}: {key} {folder} holds {identity.name!r} with role {identity.role!r}; "
            f"it must be an identity issued with --role {role}"
            + (" (a peer's certificate cannot act as an operator)" if role == "operator" else "")
        )
    return identity


def _text(source: str, raw: dict[str, Any], key: str, default: str) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or len(value) > 100:
        raise OperatorConfigError(f"{source}: '{key}' must be a string")
    return value


def _seconds(source: str, raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.1 <= value <= 3600:
        raise OperatorConfigError(f"{source}: '{key}' must be 0.1 to 3600 seconds")
    return float(value)


__all__ = ["OperatorConfig", "OperatorConfigError"]

"""Loopback ports reserved across processes, for configs written before a server binds.

A port is picked outside the kernel's ephemeral range (which outgoing connections draw
from) and held with an exclusive `flock` on a lock file in a shared folder for as long as
the reserving process lives (or until `release_port`), so that concurrent test runs and
launchers on one machine never hand out the same port.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

LOCK_DIR = Path(os.environ.get("OPENSWARM_PORT_LOCKS") or tempfile.gettempdir()) / (
    "openswarm-ports"
)
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL = (32768, 60999)
_PREFERRED = (20000, 65535)  # above well-known and most registered service ports

_held: dict[int, int] = {}  # port -> open lock file descriptor
_lock = threading.Lock()


class PortError(RuntimeError):
    """No port could be reserved."""


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (inclusive)."""
    try:
        low, high = (int(v) for v in _RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL
    return low, high


def candidate_ranges() -> list[tuple[int, int]]:
    """Inclusive port ranges to pick from: the preferred band minus the ephemeral range."""
    low, high = ephemeral_range()
    for band_low, band_high in (_PREFERRED, (1024, 65535)):
        ranges = [(band_low, min(band_high, low - 1)), (max(band_low, high + 1), band_high)]
        ranges = [(a, b) for a, b in ranges if b - a >= 99]
        if ranges:
            return ranges
    return [(1024, 65535)]  # the ephemeral range covers everything: flock still protects


def _candidates(ranges: list[tuple[int, int]]) -> Iterator[int]:
    """Every port of `ranges` once, from a random start on (so runs rarely contend)."""
    ports = [p for a, b in ranges for p in range(a, b + 1)]
    start = random.randrange(len(ports))
    yield from ports[start:]
    yield from ports[:start]


def _lock_dir() -> Path:
    if not LOCK_DIR.is_dir():
        with contextlib.suppress(FileExistsError):
            LOCK_DIR.mkdir(parents=True)
            # Shared by every user's runs; sticky so nobody removes another's lock files.
            os.chmod(LOCK_DIR, 0o1777)
    return LOCK_DIR


def _try_lock(port: int) -> int | None:
    """An fd holding the exclusive lock of `port`, or None if another holder has it."""
    path = _lock_dir() / f"{port}.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    except OSError:
        return None  # e.g. another user's file that this user may not open
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return None
        raise
    return fd


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def reserve_port(host: str = "127.0.0.1") -> int:
    """Reserve a port that binds on `host` now and that no other reserver holds.

    The reservation lasts until `release_port(port)` or the end of this process.
    """
    ranges = candidate_ranges()
    with _lock:
        for port in _candidates(ranges):
            if port in _held:
                continue
            fd = _try_lock(port)
            if fd is None:
                continue
            if not _bindable(host, port):
                os.close(fd)
                continue
            _held[port] = fd
            return port
    raise PortError(f"no free port in {ranges} (locks in {LOCK_DIR})")


def release_port(port: int) -> None:
    """End this process's reservation of `port` (nothing if it holds none)."""
    with _lock:
        fd = _held.pop(port, None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor drops the flock


def reserved_ports() -> list[int]:
    """The ports this process holds now."""
    with _lock:
        return sorted(_held)

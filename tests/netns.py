"""Multi-host test labs built on Linux network namespaces.

A ``NetnsLab(n)`` is ``n`` hosts, each in its own network namespace with one veth link to a
Linux bridge that lives in a further "switch" namespace; nothing is added to the root
namespace. Each lab owns a /28 slice of 198.51.100.0/24 (TEST-NET-2) reserved with an
exclusive ``flock`` on ``/tmp/openswarm-netns/slot-NN.lock``; the kernel drops the lock when
the owning process dies, so a crashed run frees its slot, and the next owner of the slot
first removes whatever namespaces the crashed run left behind.

Needs root and iproute2's ``ip``::

    with NetnsLab(3) as lab:
        server = lab.popen(lab.hosts[0], [sys.executable, "server.py"])
        lab.run(lab.hosts[1], ["ping", "-c1", lab.hosts[0].address], check=True)
        lab.link_down(lab.hosts[2])  # host-3 is partitioned from everybody
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

LOCK_DIR = Path("/tmp/openswarm-netns")
"""Where the per-slot lock files live (shared by every checkout on this machine)."""

BASE_NETWORK = ipaddress.IPv4Network("198.51.100.0/24")
SLOT_PREFIXLEN = 28
SLOTS = 2 ** (SLOT_PREFIXLEN - BASE_NETWORK.prefixlen)  # 16 slices of 16 addresses
MAX_HOSTS = 2 ** (32 - SLOT_PREFIXLEN) - 2  # network and broadcast addresses excluded
NETNS_PREFIX = "openswarm-"
IP_FALLBACKS = ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")
LINK_TIMEOUT_S = 5.0
KILL_TIMEOUT_S = 5.0

Argv = Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class Host:
    """One host of a lab: its namespace, its address and its end of the link to the switch."""

    name: str  # "host-1", "host-2", ...
    netns: str  # namespace name, for `ip netns exec`
    address: str  # IPv4 address on the lab's /28
    interface: str  # the veth end inside the host's namespace
    port: str  # the peer veth end, enslaved to the bridge in the switch namespace


def _find_ip() -> str:
    """Absolute path of iproute2's ``ip``, or RuntimeError."""
    found = shutil.which("ip")
    if found:
        return found
    for candidate in IP_FALLBACKS:
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        "NetnsLab needs iproute2's `ip` command, which is neither on PATH nor in "
        f"{', '.join(IP_FALLBACKS)} (install iproute2)"
    )


def _check_root() -> None:
    if os.geteuid() != 0:
        raise RuntimeError(
            f"NetnsLab needs root to create network namespaces (euid is {os.geteuid()})"
        )


def slot_netns_prefix(slot: int) -> str:
    """Prefix of every namespace name that a lab on ``slot`` creates."""
    return f"{NETNS_PREFIX}{slot:02d}-"


def slot_subnet(slot: int) -> ipaddress.IPv4Network:
    """The /28 slice of 198.51.100.0/24 that belongs to ``slot``."""
    return list(BASE_NETWORK.subnets(new_prefix=SLOT_PREFIXLEN))[slot]


def lock_slot(slot: int, lock_dir: Path | None = None) -> int | None:
    """Take the exclusive lock of ``slot`` without blocking: its fd, or None if it is held."""
    lock_dir = LOCK_DIR if lock_dir is None else lock_dir
    lock_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    # The fd is close-on-exec (Python's default), so our children never hold the lock.
    fd = os.open(lock_dir / f"slot-{slot:02d}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    # For people debugging a stuck slot; the lock, not this content, is what counts.
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def unlock_slot(fd: int) -> None:
    """Release a lock taken by ``lock_slot`` (the file stays: deleting it would race)."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def list_netns(ip: str | None = None) -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = subprocess.run(
        [ip or _find_ip(), "netns", "list"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _netns_pids(ip: str, netns: str) -> list[int]:
    proc = subprocess.run([ip, "netns", "pids", netns], capture_output=True, text=True)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()]


def _kill_pids(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def remove_netns(ip: str, names: Sequence[str]) -> list[str]:
    """Kill every process in each namespace and delete it; returns the errors, if any."""
    errors: list[str] = []
    for name in names:
        _kill_pids(_netns_pids(ip, name))
        proc = subprocess.run([ip, "netns", "delete", name], capture_output=True, text=True)
        if proc.returncode != 0 and name in list_netns(ip):
            errors.append(f"ip netns delete {name}: {proc.stderr.strip()}")
    return errors


def remove_stale(slot: int, ip: str | None = None) -> list[str]:
    """Delete namespaces left on ``slot`` by a dead run; call only while holding its lock."""
    ip = ip or _find_ip()
    prefix = slot_netns_prefix(slot)
    return remove_netns(ip, [n for n in list_netns(ip) if n.startswith(prefix)])


class NetnsLab:
    """``hosts`` network namespaces joined by one bridge; a context manager (see module doc)."""

    def __init__(self, hosts: int) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"a NetnsLab has 1..{MAX_HOSTS} hosts, not {hosts}")
        self.size = hosts
        self.hosts: list[Host] = []
        self.slot: int | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self.tag = secrets.token_hex(2)
        self.switch_netns = ""
        self.bridge = ""
        self._ip = ""
        self._lock_fd: int | None = None
        self._procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []  # namespaces, in creation order
        self._prefix = ""  # every namespace of this lab (and only of this lab) starts so
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> NetnsLab:
        if self._closed or self._lock_fd is not None:
            raise RuntimeError("a NetnsLab can be entered once")
        _check_root()
        self._ip = _find_ip()
        atexit.register(self.close)
        try:
            self._reserve()
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _reserve(self) -> None:
        for slot in range(SLOTS):
            fd = lock_slot(slot)
            if fd is None:
                continue
            self._lock_fd, self.slot = fd, slot
            self.subnet = slot_subnet(slot)
            self._prefix = f"{slot_netns_prefix(slot)}{self.tag}-"
            errors = remove_stale(slot, self._ip)
            if errors:
                raise RuntimeError(f"cannot clear stale namespaces of slot {slot}: {errors}")
            return
        raise RuntimeError(
            f"no free NetnsLab slot: all {SLOTS} /{SLOT_PREFIXLEN} slices of {BASE_NETWORK} "
            f"are locked by live processes (lock files in {LOCK_DIR})"
        )

    def _build(self) -> None:
        assert self.slot is not None and self.subnet is not None
        ifbase = f"os{self.slot:02d}{self.tag}"  # 8 chars: names stay <= 15
        self.switch_netns = self._add_netns("sw")
        self.bridge = f"{ifbase}br"
        sw = ["-n", self.switch_netns]
        self._cmd(*sw, "link", "add", "name", self.bridge, "type", "bridge", "forward_delay", "0")
        self._cmd(*sw, "link", "set", self.bridge, "up")
        for i in range(1, self.size + 1):
            netns = self._add_netns(f"h{i}")
            host = Host(
                name=f"host-{i}",
                netns=netns,
                address=str(self.subnet.network_address + i),
                interface=f"{ifbase}h{i}",
                port=f"{ifbase}b{i}",
            )
            # Created inside the switch namespace, the host end moved straight to its own.
            veth = f"link add name {host.port} type veth peer name {host.interface} netns {netns}"
            self._cmd(*sw, *veth.split())
            self._cmd(*sw, "link", "set", host.port, "master", self.bridge)
            self._cmd(*sw, "link", "set", host.port, "up")
            cidr = f"{host.address}/{SLOT_PREFIXLEN}"
            self._cmd("-n", netns, "addr", "add", cidr, "dev", host.interface)
            self._cmd("-n", netns, "link", "set", host.interface, "up")
            self.hosts.append(host)
        for host in self.hosts:
            self._wait_link(host)

    def _add_netns(self, suffix: str) -> str:
        name = f"{self._prefix}{suffix}"
        self._cmd("netns", "add", name)
        self._created.append(name)
        self._cmd("-n", name, "link", "set", "lo", "up")
        return name

    def close(self) -> None:
        """Kill the lab's processes, delete its namespaces, free its slot; idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        problems: list[str] = []
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # pgid == pid: start_new_session
        for proc in self._procs:
            try:
                proc.wait(timeout=KILL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                problems.append(f"pid {proc.pid} survived SIGKILL")
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._prefix:
            try:
                ours = [n for n in list_netns(self._ip) if n.startswith(self._prefix)]
                # Host namespaces first, the switch (bridge) last.
                ours.sort(key=lambda n: n == self.switch_netns)
                problems += remove_netns(self._ip, ours)
            except (OSError, subprocess.SubprocessError) as exc:
                problems.append(f"listing namespaces: {exc}")
        if self._lock_fd is not None:
            unlock_slot(self._lock_fd)
            self._lock_fd = None
        if problems:
            # Not raised: close() runs while another exception may be propagating. A namespace
            # left here is removed by the next run that takes this slot.
            warnings.warn(f"NetnsLab cleanup incomplete: {problems}", RuntimeWarning, 2)

    # -- running things --------------------------------------------------------------------

    def popen(self, host: Host | str, argv: Argv, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``host``'s namespace, in a new session; killed by close()."""
        if self._closed or not self.hosts:
            raise RuntimeError("NetnsLab is not open")
        netns = self.host(host).netns
        kwargs.setdefault("start_new_session", True)
        if not kwargs["start_new_session"]:
            raise ValueError("NetnsLab processes run in their own session (killed as a group)")
        proc = subprocess.Popen([self._ip, "netns", "exec", netns, *argv], **kwargs)
        self._procs.append(proc)
        return proc

    def run(
        self,
        host: Host | str,
        argv: Argv,
        *,
        input: Any = None,
        timeout: float | None = None,
        check: bool = False,
        capture_output: bool = False,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """Like ``subprocess.run`` inside ``host``'s namespace; a timeout kills the group."""
        if capture_output:
            kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
        if input is not None:
            kwargs["stdin"] = subprocess.PIPE
        proc = self.popen(host, argv, **kwargs)
        with proc:
            try:
                out, err = proc.communicate(input, timeout=timeout)
            except BaseException:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check:
            result.check_returncode()
        return result

    # -- the network -----------------------------------------------------------------------

    def host(self, host: Host | str) -> Host:
        """The lab's host with this name (``"host-2"``), or ``host`` itself if it is one."""
        for candidate in self.hosts:
            if candidate == host or candidate.name == host:
                return candidate
        raise KeyError(f"no host {host!r} in this lab")

    def link_down(self, host: Host | str) -> None:
        """Cut ``host`` off: both ends of its link go down, so it reaches nobody and back."""
        h = self.host(host)
        self._cmd("-n", h.netns, "link", "set", h.interface, "down")
        self._cmd("-n", self.switch_netns, "link", "set", h.port, "down")

    def link_up(self, host: Host | str) -> None:
        """Reconnect ``host``; returns once its link is up and its bridge port forwards."""
        h = self.host(host)
        self._cmd("-n", self.switch_netns, "link", "set", h.port, "up")
        self._cmd("-n", h.netns, "link", "set", h.interface, "up")
        self._wait_link(h)

    def _wait_link(self, host: Host) -> None:
        deadline = time.monotonic() + LINK_TIMEOUT_S
        while True:
            here = self._cmd("-n", host.netns, "-o", "link", "show", "dev", host.interface)
            port = self._cmd("-n", self.switch_netns, "-d", "-o", "link", "show", "dev", host.port)
            if "state UP" in here and "state UP" in port and "state forwarding" in port:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"link of {host.name} not up after {LINK_TIMEOUT_S}s: {port}")
            time.sleep(0.01)

    def _cmd(self, *args: str) -> str:
        proc = subprocess.run([self._ip, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip()}")
        return proc.stdout

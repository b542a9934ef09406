"""The network-namespace lab: reachability, partitions, cleanup, isolation between labs."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import netns
import pytest
from netns import Host, NetnsLab, list_netns, lock_slot, remove_stale, unlock_slot

PORT = 7400
TESTS_DIR = Path(__file__).resolve().parent

# Answers every connection with the address it came from, after printing "ready" once listening.
SERVER = """
import socket, sys
srv = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    conn, peer = srv.accept()
    with conn:
        conn.sendall(("hello " + peer[0]).encode())
"""

CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3])) as s:
        print(s.recv(100).decode())
except OSError as exc:
    print(type(exc).__name__, exc)
    sys.exit(1)
"""

# Sleeps with a child in its own process group and one that escaped into a new session.
SLEEPERS = """
import subprocess, sys, time
nap = [sys.executable, "-c", "import time; time.sleep(600)"]
kid = subprocess.Popen(nap)
runaway = subprocess.Popen(nap, start_new_session=True)
print(kid.pid, runaway.pid, flush=True)
time.sleep(600)
"""


def start_server(lab: NetnsLab, host: Host) -> subprocess.Popen[str]:
    """A SERVER on ``host``, returned once it listens."""
    proc = lab.popen(
        host, [sys.executable, "-c", SERVER, str(PORT)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def connect(lab: NetnsLab, host: Host, address: str, timeout: float = 1.0) -> str:
    """What ``host`` gets from a TCP connection to ``address``, or the client's error."""
    argv = [sys.executable, "-c", CLIENT, address, str(PORT), str(timeout)]
    result = lab.run(host, argv, capture_output=True, text=True, timeout=timeout + 10)
    return (result.stdout + result.stderr).strip()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Polls ``check`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_hosts_reach_each_other_only_through_the_lab_network() -> None:
    with NetnsLab(3) as lab:
        h1, h2, h3 = lab.hosts
        assert [h.name for h in lab.hosts] == ["host-1", "host-2", "host-3"]
        assert len({h.netns for h in lab.hosts}) == 3
        # Nothing of the lab is in the root namespace.
        root_links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
        ours = {lab.bridge, *(n for h in lab.hosts for n in (h.interface, h.port))}
        assert root_links.returncode == 0
        assert not any(name in root_links.stdout for name in ours)
        start_server(lab, h1)
        assert connect(lab, h2, h1.address) == f"hello {h2.address}"
        assert connect(lab, h3, h1.address) == f"hello {h3.address}"
        # Loopback is per namespace: the server is there in host-1's, not in host-2's.
        assert connect(lab, h1, "127.0.0.1") == "hello 127.0.0.1"
        assert connect(lab, lab.host("host-2"), "127.0.0.1").startswith("ConnectionRefusedError")


def test_link_down_partitions_a_host_until_link_up() -> None:
    with NetnsLab(3) as lab:
        h1, h2, h3 = lab.hosts
        start_server(lab, h1)
        assert connect(lab, h3, h1.address) == f"hello {h3.address}"
        lab.link_down(h3)
        started = time.monotonic()
        assert not connect(lab, h3, h1.address, timeout=0.5).startswith("hello")
        assert time.monotonic() - started < 5
        assert connect(lab, h2, h1.address) == f"hello {h2.address}"
        # Nobody reaches host-3 either.
        start_server(lab, h3)
        assert not connect(lab, h2, h3.address, timeout=0.5).startswith("hello")
        lab.link_up(h3)
        assert connect(lab, h3, h1.address) == f"hello {h3.address}"
        assert connect(lab, h2, h3.address) == f"hello {h2.address}"


def test_exception_in_the_body_kills_processes_and_deletes_namespaces() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), NetnsLab(2) as lab:
        names = [lab.switch_netns, *(h.netns for h in lab.hosts)]
        assert set(names) <= set(list_netns())
        sleepers = lab.popen(lab.hosts[0], [sys.executable, "-c", SLEEPERS], stdout=subprocess.PIPE)
        assert sleepers.stdout is not None
        kid, runaway = map(int, sleepers.stdout.readline().split())
        server = start_server(lab, lab.hosts[1])
        assert alive(kid) and alive(runaway)
        raise Boom
    assert sleepers.returncode == -signal.SIGKILL
    assert server.returncode == -signal.SIGKILL
    assert wait_until(lambda: not alive(kid) and not alive(runaway))
    assert not set(names) & set(list_netns())
    lab.close()  # idempotent
    with pytest.raises(RuntimeError, match="not open"):
        lab.popen(lab.hosts[0], ["true"])


def test_two_labs_at_once_are_disjoint() -> None:
    with NetnsLab(2) as a, NetnsLab(2) as b:
        assert a.slot != b.slot
        assert a.subnet is not None and b.subnet is not None
        assert not a.subnet.overlaps(b.subnet)
        base = ipaddress.IPv4Network("198.51.100.0/24")
        for lab in (a, b):
            assert lab.subnet is not None and lab.subnet.subnet_of(base)
            assert all(ipaddress.IPv4Address(h.address) in lab.subnet for h in lab.hosts)

        def names(lab: NetnsLab) -> set[str]:
            hosts = {n for h in lab.hosts for n in (h.netns, h.interface, h.port)}
            return hosts | {lab.switch_netns, lab.bridge}

        assert not names(a) & names(b)
        ifnames = [n for lab in (a, b) for h in lab.hosts for n in (h.interface, h.port)]
        assert max(len(n) for n in [*ifnames, a.bridge, b.bridge]) <= 15
        # The labs are separate networks: no route from one to the other.
        start_server(b, b.hosts[0])
        assert not connect(a, a.hosts[0], b.hosts[0].address, timeout=0.5).startswith("hello")


def test_a_crashed_run_frees_its_slot_and_its_leftovers_are_removed() -> None:
    code = f"""
import sys
sys.path.insert(0, {str(TESTS_DIR)!r})
from netns import NetnsLab
lab = NetnsLab(1).__enter__()
nap = lab.popen(lab.hosts[0], [sys.executable, "-c", "import time; time.sleep(600)"])
print(lab.slot, nap.pid, lab.switch_netns, lab.hosts[0].netns, flush=True)
sys.stdin.read()
"""
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    slot_text, pid_text, *leftovers = child.stdout.readline().split()
    slot, nap = int(slot_text), int(pid_text)
    child.kill()  # no close(), no atexit: namespaces and the sleeper outlive it
    child.wait()
    child.stdout.close()
    assert child.stdin is not None
    child.stdin.close()
    assert set(leftovers) <= set(list_netns())
    assert alive(nap)
    fd = lock_slot(slot)  # the kernel dropped the dead run's lock
    if fd is None:
        # A concurrent run got the slot first: its lab removes the leftovers as it starts.
        assert wait_until(lambda: not set(leftovers) & set(list_netns()))
    else:
        try:
            assert remove_stale(slot) == []
        finally:
            unlock_slot(fd)
    assert not set(leftovers) & set(list_netns())
    assert wait_until(lambda: not alive(nap))


def test_clear_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for hosts in (0, netns.MAX_HOSTS + 1):
        with pytest.raises(ValueError, match="hosts"):
            NetnsLab(hosts)
    # Every slot taken (in a private lock folder, so that no real lab is disturbed).
    monkeypatch.setattr(netns, "LOCK_DIR", tmp_path)
    held = [lock_slot(slot, tmp_path) for slot in range(netns.SLOTS)]
    try:
        with pytest.raises(RuntimeError, match="no free NetnsLab slot"), NetnsLab(1):
            pass
    finally:
        for fd in held:
            assert fd is not None
            unlock_slot(fd)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(netns, "IP_FALLBACKS", ())
    with pytest.raises(RuntimeError, match="`ip`"), NetnsLab(1):
        pass
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match="root"), NetnsLab(1):
        pass

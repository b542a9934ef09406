"""Port reservations hold across processes and stay out of the ephemeral range."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openswarm.net import ports

# A child that reserves COUNT ports from a narrow window (so that reservers contend for the
# same ports), prints them, and holds them until its stdin closes.
CHILD = """
import sys, time
from pathlib import Path
from openswarm.net import ports
lock_dir, low, high, count, go = sys.argv[1:]
ports.LOCK_DIR = Path(lock_dir)
ports.candidate_ranges = lambda: [(int(low), int(high))]
while not Path(go).exists():
    time.sleep(0.001)
got = [ports.reserve_port() for _ in range(int(count))]
print(" ".join(map(str, got)), flush=True)
sys.stdin.read()
"""


@pytest.fixture
def window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, int]]:
    """A 200-port window outside the ephemeral range, and a lock folder of this test's.

    The window is first reserved in the shared lock folder (and found bindable), so that a
    test run beside this one never binds a port of it while this test counts on them all.
    """
    first, last = ports.candidate_ranges()[0]
    shared: list[int] = []
    for _ in range(50):
        low = random.randint(first, max(first, last - 199))
        shared = [fd for p in range(low, low + 200) if (fd := ports._try_lock(p)) is not None]
        if len(shared) == 200 and all(
            ports._bindable("127.0.0.1", p) for p in range(low, low + 200)
        ):
            break
        for fd in shared:
            os.close(fd)
        shared = []
    assert shared, "no free 200-port window outside the ephemeral range"
    monkeypatch.setattr(ports, "LOCK_DIR", tmp_path / "locks")
    monkeypatch.setattr(ports, "candidate_ranges", lambda: [(low, low + 199)])
    yield low, low + 199
    for port in ports.reserved_ports():
        ports.release_port(port)
    for fd in shared:
        os.close(fd)


def _children(tmp_path: Path, window: tuple[int, int], counts: list[int]) -> list:
    go = tmp_path / "go"
    args = [str(tmp_path / "locks"), str(window[0]), str(window[1])]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args, str(count), str(go)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for count in counts
    ]
    time.sleep(0.5)  # let both start up, then release them at once
    go.touch()
    return procs


def _read_ports(proc: subprocess.Popen) -> set[int]:
    line = proc.stdout.readline()
    assert line, f"child exited {proc.wait()}"
    return {int(p) for p in line.split()}


def _end(procs: list) -> None:
    for proc in procs:
        proc.stdin.close()
        proc.wait(10)
        proc.stdout.close()


def test_concurrent_processes_never_share_a_port(tmp_path: Path, window) -> None:
    procs = _children(tmp_path, window, [80, 80])
    try:
        first, second = (_read_ports(p) for p in procs)
    finally:
        _end(procs)
    assert len(first) == len(second) == 80
    assert not first & second
    assert all(window[0] <= p <= window[1] for p in first | second)


def test_a_held_port_is_not_handed_out_until_its_holder_ends(tmp_path: Path, window) -> None:
    (holder,) = _children(tmp_path, window, [150])
    try:
        held = _read_ports(holder)
        mine = {ports.reserve_port() for _ in range(40)}
        assert len(mine) == 40 and not mine & held
        with pytest.raises(ports.PortError):  # all 200 ports of the window are taken
            for _ in range(20):
                ports.reserve_port()
    finally:
        _end([holder])
    # Its lock files stay behind, but its locks died with it.
    again = {ports.reserve_port() for _ in range(100)}
    assert again <= held


def test_release_makes_a_port_available_again(window) -> None:
    taken = {ports.reserve_port() for _ in range(200)}
    assert len(taken) == 200
    port = taken.pop()
    ports.release_port(port)
    assert ports.reserve_port() == port


def test_ports_lie_outside_the_ephemeral_range() -> None:
    low, high = ports.ephemeral_range()
    got = [ports.reserve_port() for _ in range(50)]
    try:
        assert len(set(got)) == 50
        assert not [p for p in got if low <= p <= high]
    finally:
        for port in got:
            ports.release_port(port)


@pytest.mark.parametrize(
    ("ephemeral", "expected"),
    [
        ("32768\t60999\n", [(20000, 32767), (61000, 65535)]),
        ("1024 65000\n", [(65001, 65535)]),
        ("20000 65535\n", [(1024, 19999)]),
        ("1024 65535\n", [(1024, 65535)]),
    ],
)
def test_candidates_avoid_the_kernel_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ephemeral: str, expected: list
) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text(ephemeral)
    monkeypatch.setattr(ports, "_RANGE_FILE", range_file)
    assert ports.candidate_ranges() == expected

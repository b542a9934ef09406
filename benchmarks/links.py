"""Sites behind links of a given bandwidth, for the benchmarks: network namespaces and tc.

`shaped_lab(hosts, mbit)` is a NetnsLab (tests/netns.py: one namespace per host, joined by a
bridge, addresses in 198.51.100.0/24) whose hosts 2.. each get their own link of `mbit`
Mbit/s each way: a token bucket (tc tbf) on the host's end of its veth (what it sends) and
on the bridge's end (what it receives). Host 1, for the ledger, is left unshaped: a site's
link carries models, the ledger's a few kilobytes a round. A worker process enters its
host with `enter_host` before it opens any socket or starts a thread. Needs root, `ip` and
`tc`.
"""

from __future__ import annotations

import contextlib
import ctypes
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from netns import NetnsLab

CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")


@contextlib.contextmanager
def shaped_lab(hosts: int, mbit: int) -> Iterator[NetnsLab]:
    """A lab of `hosts` hosts; every one but the first behind its own `mbit` link."""
    with NetnsLab(hosts) as lab:
        for host in lab.hosts[1:]:
            _shape(host.netns, host.interface, mbit)
            _shape(lab.switch_netns, host.port, mbit)
        yield lab


def _shape(netns: str, device: str, mbit: int) -> None:
    burst = max(32_000, mbit * 1_000_000 // 8 // 100)  # 10 ms of the rate, in bytes
    subprocess.run(
        ["ip", "netns", "exec", netns, "tc", "qdisc", "add", "dev", device, "root", "tbf",
         "rate", f"{mbit}mbit", "burst", str(burst), "latency", "100ms"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip


def enter_host(netns: str) -> None:
    """Move this process (its only thread: call it first) into namespace `netns`."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(NETNS_DIR / netns) as handle:
        if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {netns} failed")

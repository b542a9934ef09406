"""Three ledger nodes on three network hosts, a client on a fourth (NetnsLab).

Each node runs in its host's network namespace with its managed etcd member beside it
(peer traffic between the hosts' addresses, over mTLS). The test process, in the root
namespace, cannot reach the lab: clients run in the client host (tests/ledger_load.py) and
report in JSON, and the test reads the nodes' chain files, which are on the shared disk.

The scenarios share one cluster; each leaves it healthy, and the `healthy` fixture repairs
it (nodes restarted, links up) when a failed scenario did not.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from netns import Host, NetnsLab

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.local import LocalLedger, ReplicaProcess
from openswarm.ledger.store import read_chain
from openswarm.ledger.tx import make_transaction
from openswarm.ledger.verify import verify_chain_dir

pytestmark = pytest.mark.slow

LOAD = Path(__file__).with_name("ledger_load.py")
PEERS = ("p1", "p2", "p3")
DEADLINE_S = 60.0  # for anything that must happen eventually (generous: CI runs in parallel)
#: Seconds per call while a host is cut off: a call to it fails over only once this is up
#: (no answer, not even a refusal), so it is shorter than the client's usual 20 s.
CUT_TIMEOUT_S = 8.0


@dataclass
class Cluster:
    lab: NetnsLab
    net: LocalLedger
    client_host: Host
    down: set[int] = field(default_factory=set)  # replicas whose host's link is down

    def host_of(self, replica: ReplicaProcess) -> Host:
        return next(h for h in self.lab.hosts if h.address == replica.host)

    def spawn(self, replica: ReplicaProcess, argv: list[str], **popen: Any) -> subprocess.Popen:
        return self.lab.popen(self.host_of(replica), argv, **popen)  # a new session: killpg

    # --- clients, in the client host ------------------------------------------------------
    def load(
        self, command: str, *args: str, endpoints: Sequence[str] = (), ready: Sequence[str] = ()
    ) -> tuple[int, dict[str, Any]]:
        """Run ledger_load.py COMMAND in the client host: (exit status, its JSON summary)."""
        argv = [sys.executable, str(LOAD), command, "--pki", str(self.net.pki_dir),
                "--endpoints", ",".join(endpoints or self.net.endpoints), *args]  # fmt: skip
        if ready:
            argv += ["--ready", ",".join(ready), "--ready-s", str(DEADLINE_S)]
        started = time.monotonic()
        result = self.lab.run(
            self.client_host, argv, capture_output=True, text=True, timeout=3 * DEADLINE_S
        )
        print(f"ledger_load.py {command}: exit {result.returncode} after "
              f"{time.monotonic() - started:.1f} s")  # fmt: skip
        lines = result.stdout.strip().splitlines()
        try:
            summary = json.loads(lines[-1])
        except (IndexError, json.JSONDecodeError):
            pytest.fail(
                f"ledger_load.py {command} exited {result.returncode} without a summary:\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}\n{self.logs()}"
            )
        return result.returncode, summary

    def submit(
        self, names: Sequence[str], count: int, epoch: int, timeout_s: float = 20.0, **kw: Any
    ) -> list[dict]:
        """Register `names` and submit `count` metrics each, concurrently; all must apply."""
        code, summary = self.load(
            "submit", "--names", ",".join(names), "--count", str(count), "--epoch", str(epoch),
            "--register", "--timeout", str(timeout_s), **kw,
        )  # fmt: skip
        assert code == 0 and summary["ok"], f"{_show(summary)}\n{self.logs()}"
        assert len(summary["txs"]) == len(names) * (count + 1)
        return summary["txs"]

    def ready(self, indexes: Sequence[int]) -> None:
        endpoints = [self.net.replicas[i].grpc_address for i in indexes]
        code, summary = self.load("ready", endpoints=endpoints, ready=endpoints)
        assert code == 0, f"{_show(summary)}\n{self.logs()}"

    # --- faults ---------------------------------------------------------------------------
    def kill(self, index: int) -> None:
        """SIGKILL node `index`; returns once its etcd member is gone too."""
        replica = self.net.replicas[index]
        member_dir = str(replica.data_dir / "etcd")
        assert _processes_with(member_dir), f"no etcd member of {replica.name} is running"
        self.net.kill(index)
        _wait(lambda: not _processes_with(member_dir), f"etcd member of {replica.name} to die")

    def link_down(self, index: int) -> None:
        self.down.add(index)
        self.lab.link_down(self.host_of(self.net.replicas[index]))

    def link_up(self, index: int) -> None:
        self.lab.link_up(self.host_of(self.net.replicas[index]))
        self.down.discard(index)

    # --- chains on disk -------------------------------------------------------------------
    def chains(self, height: int, indexes: Sequence[int] = (0, 1, 2)) -> list[list[dict]]:
        """Blocks 0..height of these nodes' chain files, once every one has them."""
        replicas = [self.net.replicas[i] for i in indexes]
        found: list[list[dict]] = []

        def reached() -> bool:
            found[:] = [read_chain(r.data_dir) for r in replicas]
            return all(len(chain) > height for chain in found)

        _wait(reached, f"chains to reach height {height}", lambda: self._lengths(found))
        return [chain[: height + 1] for chain in found]

    def identical_chains(self, height: int, indexes: Sequence[int] = (0, 1, 2)) -> list[dict]:
        """The nodes' chains up to `height`: the same blocks everywhere, each one verified."""
        chains = self.chains(height, indexes)
        for index, chain in zip(indexes, chains, strict=True):
            differ = next(
                (b["height"] for b, a in zip(chain, chains[0], strict=True) if a != b), None
            )
            assert differ is None, f"ledger-{index + 1} differs from ledger-1 at block {differ}"
            report = verify_chain_dir(self.net.replicas[index].data_dir)
            assert report.ok, f"ledger-{index + 1}: {report}"
        return chains[0]

    def _lengths(self, chains: list[list[dict]]) -> str:
        heights = ", ".join(
            f"{r.name}: {len(c) - 1}" for r, c in zip(self.net.replicas, chains, strict=False)
        )
        return f"heights {heights}\n{self.logs()}"

    def logs(self) -> str:
        parts = []
        for replica in self.net.replicas:
            for path in (replica.log_path, replica.data_dir / "etcd.log"):
                if path is not None and path.exists():
                    tail = path.read_text(errors="replace")[-1500:]
                    parts.append(f"--- {path.name} of {replica.name} ---\n{tail}")
        return "\n".join(parts)


def _show(summary: dict) -> str:
    return json.dumps(summary, indent=1)[-6000:]


def _wait(check: Any, what: str, explain: Any = None, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}"
                        + (f"\n{explain()}" if explain else ""))  # fmt: skip
        time.sleep(0.05)


def _processes_with(needle: str) -> list[int]:
    """Live (not zombie) processes whose command line contains `needle`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if needle.encode() in cmdline and state != "Z":
                found.append(int(entry))
    return found


def _tx_blocks(blocks: list[dict]) -> dict[str, list[dict]]:
    by_id: dict[str, list[dict]] = {}
    for block in blocks:
        if "tx" in block:
            by_id.setdefault(block["tx_id"], []).append(block)
    return by_id


def _assert_once(blocks: list[dict], txs: list[dict]) -> None:
    """Each submitted transaction is on the chain once, applied, where its submitter heard."""
    by_id = _tx_blocks(blocks)
    for tx in txs:
        found = by_id.get(tx["tx_id"], [])
        assert [b["height"] for b in found] == [tx["height"]], (tx, found)
        assert found[0]["outcome"]["status"] == "applied", found[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three ledger nodes on hosts 1-3 and a client host 4 of one lab, always cleaned up."""
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(NetnsLab(4))
        net = LocalLedger.create(
            tmp_path_factory.mktemp("hosts") / "net", replicas=3, peers=PEERS,
            contract_settings={}, hosts=[h.address for h in lab.hosts[:3]],
        )  # fmt: skip
        stack.callback(net.close)  # runs before the lab's close
        cluster = Cluster(lab, net, lab.hosts[3])
        net.spawner = cluster.spawn
        net.start()
        cluster.ready(range(3))
        yield cluster


@pytest.fixture(autouse=True)
def healthy(cluster: Cluster) -> Cluster:
    """Before each scenario: every link up and every node running (after a failed one)."""
    repaired = sorted(cluster.down)
    for index in repaired:
        cluster.link_up(index)
    stopped = [i for i, r in enumerate(cluster.net.replicas) if not r.running]
    if stopped:
        cluster.net.start(*stopped)
    if repaired or stopped:
        cluster.ready(range(3))
    return cluster


def test_concurrent_submitters_get_identical_verified_chains(cluster: Cluster) -> None:
    txs = cluster.submit(PEERS, count=5, epoch=0)
    blocks = cluster.identical_chains(max(t["height"] for t in txs))
    _assert_once(blocks, txs)
    assert {b["tx"]["sender"] for b in blocks if "tx" in b} == set(PEERS)
    assert len({b["tick"]["node"] for b in blocks if "tick" in b}) >= 2  # ledger time


def test_one_node_down_submissions_go_on_and_it_catches_up(cluster: Cluster) -> None:
    net = cluster.net
    cluster.kill(2)
    txs = cluster.submit(["p1", "p2"], count=3, epoch=100, ready=net.endpoints[:2])
    top = max(t["height"] for t in txs)
    _assert_once(cluster.identical_chains(top, (0, 1)), txs)
    assert not set(_tx_blocks(read_chain(net.replicas[2].data_dir))) & {t["tx_id"] for t in txs}

    net.start(2)  # back: its member rejoins, the node applies what it missed
    _assert_once(cluster.identical_chains(top), txs)
    # ...and it serves again: a submission through it alone commits everywhere
    more = cluster.submit(["p3"], count=1, epoch=150, endpoints=[net.endpoints[2]],
                          ready=net.endpoints)  # fmt: skip
    _assert_once(cluster.identical_chains(max(t["height"] for t in more)), txs + more)


def test_two_nodes_down_no_quorum_then_applied_once(cluster: Cluster, tmp_path: Path) -> None:
    net = cluster.net
    cluster.submit(["p3"], count=0, epoch=0)  # registered, whatever ran before
    tx = make_transaction(
        net.identity("p3"), "metrics", contract=DEFAULT_CONTRACT, round=1,
        payload={"loss": 0.5, "metric": 0.5, "epoch": 200, "total_epochs": 1000},
    )  # fmt: skip
    tx_file = tmp_path / "tx.json"
    tx_file.write_text(json.dumps(tx.to_dict()))
    submit = ("submit-tx", "--identity", "p3", "--tx", str(tx_file))

    cluster.kill(1)
    cluster.kill(2)
    code, summary = cluster.load(*submit)
    assert code == 2 and summary["no_quorum"], _show(summary)
    assert summary["error"].startswith("NoQuorumError") and "no quorum" in summary["error"]
    assert tx.tx_id not in _tx_blocks(read_chain(net.replicas[0].data_dir))

    net.start(1, 2)  # a majority again: the same signed transaction, submitted again, twice
    code, summary = cluster.load(*submit, "--repeat", "2", "--retry-s", str(DEADLINE_S),
                                 ready=net.endpoints)  # fmt: skip
    assert code == 0 and summary["ok"], f"{_show(summary)}\n{cluster.logs()}"
    first, again = summary["outcomes"]
    assert first["status"] == "applied" and again == first, summary
    blocks = cluster.identical_chains(first["height"])
    found = _tx_blocks(blocks)[tx.tx_id]
    applied = [b["height"] for b in found if b["outcome"]["status"] == "applied"]
    assert applied == [first["height"]], found
    assert all("replayed" in b["outcome"]["reason"] for b in found if b["height"] not in applied)
    # Later blocks must not apply it again either (a late record of the first attempt).
    later = cluster.submit(["p3"], count=1, epoch=201)
    blocks = cluster.identical_chains(max(t["height"] for t in later))
    statuses = [b["outcome"]["status"] for b in _tx_blocks(blocks)[tx.tx_id]]
    assert statuses.count("applied") == 1, statuses


def test_partitioned_host_submissions_go_on_and_it_catches_up(cluster: Cluster) -> None:
    net = cluster.net
    cut = 0  # the client's first endpoint: its calls there fail over to the others
    cluster.link_down(cut)
    txs = cluster.submit(
        ["p1", "p2"], count=3, epoch=300, ready=net.endpoints[1:], timeout_s=CUT_TIMEOUT_S
    )
    top = max(t["height"] for t in txs)
    _assert_once(cluster.identical_chains(top, (1, 2)), txs)
    assert not set(_tx_blocks(read_chain(net.replicas[cut].data_dir))) & {t["tx_id"] for t in txs}

    cluster.link_up(cut)
    _assert_once(cluster.identical_chains(top), txs)

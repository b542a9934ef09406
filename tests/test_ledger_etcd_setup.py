"""Setting up an etcd-backed ledger node: an external cluster, etcd versions, config errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml
from harness import run_cli

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.config import ConfigError, LedgerConfig
from openswarm.ledger.etcd_member import EtcdMember, EtcdSetupError, MemberSpec, check_version
from openswarm.ledger.local import LocalLedger


def _config(net: LocalLedger) -> tuple[Path, dict]:
    path = net.replicas[0].config_path
    return path, yaml.safe_load(path.read_text())


def test_a_node_on_an_external_etcd_cluster(tmp_path: Path) -> None:
    net = LocalLedger.create(tmp_path / "net", replicas=1, peers=["p1"], backend="etcd",
                             contract_settings={})  # fmt: skip
    path, config = _config(net)
    member = config["etcd"].pop("member")
    # The cluster is run by someone else (here: by the test), the node only talks to it.
    cluster = EtcdMember(
        MemberSpec(
            name="it-etcd-0", data_dir=tmp_path / "it-etcd", client_url=member["client_url"],
            peer_url=member["peer_url"], initial_cluster=(("it-etcd-0", member["peer_url"]),),
            state="new", cluster_token="it", identity_dir=net.identity_dir("ledger-1"),
        ),
        tmp_path / "it-etcd.log",
    )  # fmt: skip
    cluster.start()
    try:
        config["etcd"]["endpoints"] = [member["client_url"]]
        path.write_text(yaml.safe_dump(config))
        net.start()
        net.wait_ready()
        with net.client("p1") as client:
            payload = {"endpoint": "127.0.0.1:9"}
            client.submit("register", contract=DEFAULT_CONTRACT, payload=payload)
            status = client.status()
        assert status["ordering"]["kind"] == "etcd" and status["has_quorum"]
        assert [m["name"] for m in status["ordering"]["members"]] == ["it-etcd-0"]
        assert not (net.replicas[0].data_dir / "etcd").exists()  # no member of its own
    finally:
        net.close()
        cluster.stop()


def _fake_etcd(folder: Path, version: str) -> Path:
    fake = folder / "etcd"
    fake.write_text(f"#!/bin/sh\necho 'etcd Version: {version}'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def test_etcd_releases_that_lose_data_are_refused(tmp_path: Path) -> None:
    net = LocalLedger.create(tmp_path / "net", replicas=1, backend="etcd")
    config = str(net.replicas[0].config_path)
    for version, why in (("3.5.1", "3.5.0-3.5.2"), ("3.3.25", "needs etcd 3.4")):
        fake = _fake_etcd(tmp_path, version)
        refused = run_cli("ledger", "start", "--config", config, "--etcd-bin", str(fake))
        assert refused.returncode == 1, refused
        assert why in refused.stderr and "Traceback" not in refused.stderr
    missing = run_cli("ledger", "start", "--config", config, "--etcd-bin", "no-such-etcd")
    assert missing.returncode == 1 and "apt-get install etcd-server" in missing.stderr
    net.close()
    check_version((3, 4, 23))
    check_version((3, 5, 3))
    with pytest.raises(EtcdSetupError, match="lose committed writes"):
        check_version((3, 5, 0))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"raft": "127.0.0.1:1"}, "Raft settings are gone"),
        (
            {
                "etcd": {
                    "member": {
                        "client_url": "https://10.0.0.1:2379",
                        "peer_url": "https://10.0.0.1:2380",
                    }
                }
            },
            "loopback",
        ),
        ({"etcd": {"endpoints": ["http://127.0.0.1:2379"]}}, "https://HOST:PORT"),
        ({"etcd": {}}, "give the external cluster's 'endpoints'"),
        ({"import_chain": "old.jsonl"}, "etcd-backed ledger"),
    ],
)
def test_config_errors_name_the_setting_and_the_fix(change: dict, named: str) -> None:
    base = {"data_dir": "d", "listen": "127.0.0.1:1", "identity": "i", "genesis": "g.json"}
    with pytest.raises(ConfigError, match=named):
        LedgerConfig.from_dict({**base, **change})

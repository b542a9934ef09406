"""The documented manual flow: pki init/issue, ledger genesis, a YAML config, ledger start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from harness import run_cli

from openswarm.ledger.local import free_port


def _ok(*args: str) -> str:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_manual_single_replica_flow(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    _ok("pki", "init", str(pki), "--swarm", "clinic")
    _ok("pki", "issue", str(pki), "sn-1", "--role", "ledger", "--host", "127.0.0.1")
    _ok("pki", "issue", str(pki), "site-a", "--role", "peer")
    _ok("pki", "issue", str(pki), "ops", "--role", "admin")
    genesis = tmp_path / "genesis.json"
    out = _ok("ledger", "genesis", "--pki", str(pki), "--out", str(genesis))
    assert "3 identities" in out
    record = json.loads(genesis.read_text())
    assert {(e["name"], e["role"]) for e in record["admitted"]} == {
        ("sn-1", "ledger"), ("site-a", "peer"), ("ops", "admin")
    }  # fmt: skip

    listen = f"127.0.0.1:{free_port()}"
    config = tmp_path / "sn-1.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": "data",
                "listen": listen,
                "identity": "pki/identities/sn-1",
                "genesis": "genesis.json",
            }
        )
    )
    replica = subprocess.Popen(
        [sys.executable, "-m", "openswarm.cli.main", "ledger", "start", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert replica.stdout is not None
        line = replica.stdout.readline()
        assert "serving on" in line, line + replica.stdout.read()
        admin = str(pki / "identities" / "ops")
        deadline = time.monotonic() + 30
        while True:
            status = run_cli("ledger", "status", "--connect", listen, "--identity", admin, "--json")
            if status.returncode == 0 and json.loads(status.stdout)["ledger_time"] > 0:
                break
            assert time.monotonic() < deadline, status.stderr
        info = json.loads(status.stdout)
        assert info["swarm"] == "clinic" and info["has_quorum"] and info["halted"] is None
        assert "ordering: embedded" in line
        assert abs(info["ledger_time"] - time.time()) < 60
    finally:
        os.killpg(replica.pid, signal.SIGTERM)
        replica.wait(20)
    assert (tmp_path / "data" / "chain.jsonl").exists()
    assert " blocks verified" in _ok("ledger", "verify", str(tmp_path / "data"))


def test_genesis_sets_a_contracts_weight_policy(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    _ok("pki", "init", str(pki), "--swarm", "clinic")
    genesis = tmp_path / "genesis.json"
    _ok("ledger", "genesis", "--pki", str(pki), "--out", str(genesis), "--contract", "c1",
        "--weight-policy", "fixed", "--weight", "site-a=3", "--weight", "site-b=1.5")  # fmt: skip
    settings = json.loads(genesis.read_text())["contracts"]["c1"]
    assert settings["weight_policy"] == "fixed"
    assert settings["weights"] == {"site-a": 3.0, "site-b": 1.5}
    refused = run_cli("ledger", "genesis", "--pki", str(pki), "--out", str(genesis),
                      "--weight-policy", "fixed")  # fmt: skip
    assert refused.returncode != 0 and "'fixed' needs weights" in refused.stderr
    refused = run_cli("ledger", "genesis", "--pki", str(pki), "--out", str(genesis),
                      "--weight-policy", "fixed", "--weight", "site-a=x")  # fmt: skip
    assert refused.returncode != 0 and "W must be a number" in refused.stderr


def test_bad_config_gets_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"data_dir": "d", "listen": "nowhere"}))
    done = run_cli("ledger", "start", "--config", str(config))
    assert done.returncode == 1
    assert "listen" in done.stderr and "host:port" in done.stderr
    assert "Traceback" not in done.stderr
    config.write_text(yaml.safe_dump({"data_dir": "d", "listen": "a:1", "raft": "x:1"}))
    done = run_cli("ledger", "start", "--config", str(config))
    assert done.returncode == 1 and "Raft settings are gone" in done.stderr
    config.write_text("listen: [unclosed")
    done = run_cli("ledger", "start", "--config", str(config))
    assert done.returncode == 1 and "cannot read ledger config" in done.stderr

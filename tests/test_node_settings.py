"""Where a site finds the network: a YAML file, overridden by OPENSWARM_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from openswarm.node.settings import NetworkConfig, SwarmConfigError, SwarmSettings


def test_environment_overrides_the_config_file(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "swarm.yaml"
    config.write_text("ledger: [10.0.0.5:7001, 10.0.0.6:7001]\nidentity: ids/site-a\n")
    for key in ("LEDGER", "IDENTITY", "LISTEN", "CONTRACT", "ADVERTISE"):
        monkeypatch.delenv(f"OPENSWARM_{key}", raising=False)
    monkeypatch.setenv("OPENSWARM_CONFIG", str(config))
    loaded = NetworkConfig.load()
    assert loaded.ledger == ("10.0.0.5:7001", "10.0.0.6:7001")
    assert loaded.identity == Path("ids/site-a") and loaded.listen == "127.0.0.1:0"
    assert loaded.advertise is None
    monkeypatch.setenv("OPENSWARM_LEDGER", "127.0.0.1:1,127.0.0.1:2")
    monkeypatch.setenv("OPENSWARM_LISTEN", "0.0.0.0:7200")
    monkeypatch.setenv("OPENSWARM_ADVERTISE", "site-a.example")
    loaded = NetworkConfig.load()
    assert loaded.ledger == ("127.0.0.1:1", "127.0.0.1:2")
    assert (loaded.listen, loaded.advertise) == ("0.0.0.0:7200", "site-a.example")


def test_missing_network_settings_say_what_to_set(monkeypatch) -> None:
    for key in ("CONFIG", "LEDGER", "IDENTITY"):
        monkeypatch.delenv(f"OPENSWARM_{key}", raising=False)
    with pytest.raises(SwarmConfigError, match="OPENSWARM_LEDGER"):
        NetworkConfig.load()
    monkeypatch.setenv("OPENSWARM_LEDGER", "127.0.0.1:1")
    with pytest.raises(SwarmConfigError, match="OPENSWARM_IDENTITY"):
        NetworkConfig.load()


def test_swarm_settings_refuse_bad_values() -> None:
    with pytest.raises(SwarmConfigError, match="unknown merge method 'avg'"):
        SwarmSettings(merge_method="avg")
    with pytest.raises(SwarmConfigError, match="contribution"):
        SwarmSettings(contribution="all")
    with pytest.raises(SwarmConfigError, match="min_peers"):
        SwarmSettings(min_peers=0)
    for weight in (0, 2.5, 101, 1e9):
        with pytest.raises(SwarmConfigError, match=r"integer from 1 to 100.*nodeWeightage"):
            SwarmSettings(weight=weight)
    with pytest.raises(SwarmConfigError, match="weight_policy must be one of equal, declared"):
        SwarmSettings(weight_policy="loudest")
    assert "weight_policy" not in SwarmSettings().contract_settings()
    assert SwarmSettings(weight_policy="equal").contract_settings()["weight_policy"] == "equal"

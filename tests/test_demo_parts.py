"""The demo's data split, baselines, report and per-peer script (the swarm run is `slow`)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image

from openswarm import DEFAULT_CONTRACT
from openswarm.demo.baselines import centralized_accuracy, local_accuracies
from openswarm.demo.data import (
    HOME_CLASSES,
    NUM_CLASSES,
    DataError,
    Split,
    largest_shard,
    prepare,
    shard_counts,
    skewed_shards,
)
from openswarm.demo.plot import accuracy_series
from openswarm.demo.run_demo import DemoReport, PeerReport, format_report, run_demo
from openswarm.demo.train import parse_args


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Split], Split, Path]:
    root = tmp_path_factory.mktemp("demo") / "data"
    data = prepare(root, 3)
    shards = [Split.load(d / "shard.npz") for d in data.shard_dirs]
    return shards, Split.load(data.test_path), root


def _rows(split: Split) -> set[bytes]:
    return {row.tobytes() for row in split.x}


def test_files_and_shapes(demo_data: tuple[list[Split], Split, Path]) -> None:
    shards, test, root = demo_data
    assert (root / "test.npz").is_file()
    assert [p.name for p in sorted(root.glob("site-*/shard.npz"))] == ["shard.npz"] * 3
    assert len(test) == 1000 and np.bincount(test.y).tolist() == [100] * NUM_CLASSES
    for shard in shards:
        assert shard.x.shape == (1200, 784) and shard.x.dtype == np.float32
        assert shard.x.min() >= 0.0 and shard.x.max() <= 1.0


def test_shards_are_disjoint_and_the_test_set_held_out(
    demo_data: tuple[list[Split], Split, Path],
) -> None:
    shards, test, _ = demo_data
    test_rows = _rows(test)
    seen: set[bytes] = set()
    for shard in shards:
        rows = _rows(shard)
        assert not rows & test_rows
        assert not rows & seen
        seen |= rows


def test_shards_are_skewed(demo_data: tuple[list[Split], Split, Path]) -> None:
    shards, _, _ = demo_data
    for shard, home in zip(shards, HOME_CLASSES[3], strict=True):
        counts = np.bincount(shard.y, minlength=NUM_CLASSES)
        assert counts[list(home)].sum() >= 0.95 * len(shard)
        others = [c for c in range(NUM_CLASSES) if c not in home]
        assert all(1 <= counts[c] <= 10 for c in others)  # seen, but barely


def test_split_limits_are_explained() -> None:
    with pytest.raises(DataError, match="1 to 5 sites"):
        shard_counts(7, 100, 0.1)
    with pytest.raises(DataError, match="minority share"):
        shard_counts(3, 100, 1.5)
    assert shard_counts(3, 1200, 0.03).sum(axis=1).tolist() == [1200, 1200, 1200]
    pool = Split(x=np.zeros((4000, 784), np.float32), y=np.repeat(np.arange(10), 400))
    assert [largest_shard(pool, n, 0.03) for n in (1, 3, 5)] == [1200, 1200, 800]
    with pytest.raises(DataError, match="pool has 400"):
        skewed_shards(pool, 5, 1000, 0.03)


def test_local_only_models_fail_where_pooled_data_succeeds(
    demo_data: tuple[list[Split], Split, Path],
) -> None:
    shards, test, _ = demo_data
    local = local_accuracies(shards, test, epochs=5)
    central = centralized_accuracy(shards, test, epochs=5)
    assert central > 0.9
    assert all(acc < central - 0.2 for acc in local), (local, central)


def test_report_json_shape_and_table(tmp_path: Path) -> None:
    report = DemoReport(
        peers=[PeerReport(f"site-{i}", 0.6, 0.92, "ab" * 32) for i in (1, 2, 3)],
        centralized_accuracy=0.94,
        rounds=39,
        seconds=21.5,
        ledger_dir=tmp_path / "ledger",
    )
    data = json.loads(json.dumps(report.to_json()))
    assert set(data) == {"peers", "centralized_accuracy", "rounds", "seconds", "ledger_dir",
                         "compression", "received_mb", "topology", "training"}  # fmt: skip
    assert [set(p) for p in data["peers"]] == [
        {"name", "local_accuracy", "swarm_accuracy", "final_digest"}
    ] * 3
    assert data["ledger_dir"] == str(tmp_path / "ledger")
    table = format_report(report)
    assert "60.0 %" in table and "92.0 %" in table and "94.0 %" in table
    assert "ab" * 32 in table and "rounds: 39" in table


def test_train_script_needs_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENSWARM_DATA_DIR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        parse_args([])
    assert exit_info.value.code == 2
    monkeypatch.setenv("MAX_EPOCHS", "7")
    monkeypatch.setenv("OPENSWARM_MIN_PEERS", "3")
    args = parse_args(["--data-dir", "/data"])
    assert (args.epochs, args.min_peers, args.data_dir) == (7, 3, Path("/data"))


@pytest.mark.slow
def test_demo_swarm_beats_local_models(tmp_path: Path) -> None:
    out = tmp_path / "demo.json"
    seen: dict = {}

    def look(url: str) -> None:  # `demo --ui`: the dashboard serves the finished swarm
        answer = urllib.request.urlopen(f"{url}api/contract/{quote(DEFAULT_CONTRACT)}", timeout=10)
        seen.update(json.loads(answer.read()))

    lines: list[str] = []
    run_demo(epochs=4, workdir=tmp_path / "demo", json_path=out, echo=lines.append,
             show_progress=False, ui_listen="127.0.0.1:0", hold_ui=look)  # fmt: skip
    data = json.loads(out.read_text())
    assert any(line.startswith("dashboard at http://127.0.0.1:") for line in lines), lines
    assert seen["all_finished"] and [s["name"] for s in seen["sites"]] == [
        "site-1", "site-2", "site-3"
    ]  # fmt: skip
    # the plot beside the JSON draws what the ledger recorded: a line per site over the rounds
    series = accuracy_series(Path(data["ledger_dir"]), DEFAULT_CONTRACT)
    assert sorted(series) == ["site-1", "site-2", "site-3"]
    assert series == seen["series"]
    with Image.open(out.with_suffix(".png")) as picture:
        assert picture.format == "PNG" and picture.size[0] > 400
    peers = data["peers"]
    assert [p["name"] for p in peers] == ["site-1", "site-2", "site-3"]
    digests = {p["final_digest"] for p in peers}
    assert len(digests) == 1 and len(digests.pop()) == 64
    swarm = min(p["swarm_accuracy"] for p in peers)
    assert all(swarm > p["local_accuracy"] + 0.15 for p in peers), data
    assert swarm > data["centralized_accuracy"] - 0.06, data
    assert data["rounds"] >= 10 and Path(data["ledger_dir"]).is_dir()
    assert data["compression"] == "none" and data["received_mb"] > 0

"""The dashboard's parts on their own, over the chain of one real three-site swarm: the chain
index (incremental adds, runs, search), the page views, the saved-experiments file, who may
connect, and the --listen address."""

from __future__ import annotations

import http.client
import io
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import Swarm

from openswarm import DEFAULT_CONTRACT
from openswarm.admin.client import node_status
from openswarm.protocol import ROUND_PHASES
from openswarm.ui.access import COOKIE, Access, allowed_hosts, is_loopback
from openswarm.ui.chain import ChainIndex, ContractRun, block_summary
from openswarm.ui.experiments import (
    MAX_NOTE,
    MAX_SAVED,
    MAX_TITLE,
    ExperimentError,
    ExperimentStore,
)
from openswarm.ui.launch import UiError, default_experiments_file, parse_listen
from openswarm.ui.views import (
    MAX_POINTS,
    contract_view,
    experiments_view,
    round_rows,
    swarm_view,
    thinned,
)

C = DEFAULT_CONTRACT
REPORT_KEYS = ("loss", "metric", "epoch", "total_epochs")
#: What site-1 reports for round 1 after the run: a later report that replaces its first.
LATE_REPORT = {"loss": 0.5, "metric": 0.75, "epoch": 0, "total_epochs": 2}
BOGUS_DIGEST = "0" * 64


@dataclass(frozen=True)
class Chain:
    """One finished swarm's ledger as the dashboard reads it."""

    blocks: list[dict[str, Any]]
    ledger: dict[str, Any]  # LedgerClient.state()
    contract: dict[str, Any]  # the default contract's state
    nodes: dict[str, dict[str, Any]]
    endpoints: list[str]
    sites: list[str]
    late_height: int
    rejected: dict[str, int]  # what was tried → its block's height


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    """Three sites train two epochs; then a site re-reports round 1 (applied) and the sites
    send a metrics report for a round not started and a merge they did not lead (rejected)."""
    swarm = Swarm(tmp_path_factory.mktemp("dashboard-parts") / "swarm", 3)
    try:
        swarm.start_all(EPOCHS="2", MIN_PEERS="3")
        swarm.wait()
        with swarm.ledger.client("site-1") as site:
            late = site.submit("metrics", contract=C, round=1, payload=LATE_REPORT)
        assert late.applied, late
        with swarm.ledger.client("site-2") as site:
            early = site.submit(
                "metrics", contract=C, round=10_000, payload={"loss": 123.0, "epoch": 0}
            )
        with swarm.ledger.client("site-3") as site:
            merge = site.submit(
                "merged", contract=C, round=1, payload={"digest": BOGUS_DIGEST, "size": 1}
            )
        assert not early.applied and not merge.applied, (early, merge)
        ledger = swarm.admin.state()
        contract = swarm.admin.state(C)["state"]
        blocks = swarm.admin.blocks(0, int(ledger["height"]))
        nodes = node_status(swarm.admin)
        yield Chain(
            blocks,
            ledger,
            contract,
            nodes,
            list(swarm.ledger.endpoints),
            swarm.names,
            late.height,
            {"metrics": early.height, "merged": merge.height},
        )
    finally:
        swarm.close()


@pytest.fixture(scope="module")
def index(chain: Chain) -> ChainIndex:
    whole = ChainIndex()
    assert whole.add(chain.blocks) == len(chain.blocks)
    return whole


# --- what the raw chain says, computed without the dashboard ---


def _tx(block: Mapping[str, Any]) -> dict[str, Any]:
    return block.get("tx") or {}


def _applied(block: Mapping[str, Any], tx_type: str, contract: str = C) -> bool:
    tx = _tx(block)
    return (
        tx.get("type") == tx_type
        and tx.get("contract") == contract
        and block["outcome"]["status"] == "applied"
    )


def _raw_kind(block: Mapping[str, Any]) -> str:
    if "tx" in block:
        return str(block["tx"]["type"])
    return "tick" if "tick" in block else "genesis"


def _raw_sender(block: Mapping[str, Any]) -> str | None:
    if "tx" in block:
        return str(block["tx"]["sender"])
    return block["tick"]["node"] if "tick" in block else None


def _raw_reports(blocks: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """(round, site) → the payload of that site's last applied metrics report of the round."""
    reports: dict[tuple[int, str], dict[str, Any]] = {}
    for block in blocks:
        if _applied(block, "metrics"):
            tx = block["tx"]
            reports[(tx["round"], tx["sender"])] = tx["payload"]
    return reports


def _raw_merges(blocks: list[dict[str, Any]]) -> dict[int, tuple[str, int, str]]:
    """round → (digest, height, leader) of its applied merge."""
    merges = {}
    for block in blocks:
        if _applied(block, "merged"):
            tx = block["tx"]
            assert tx["round"] not in merges, "one applied merge per round"
            merges[tx["round"]] = (tx["payload"]["digest"], block["height"], tx["sender"])
    return merges


def _heights(summaries: list[dict[str, Any]]) -> list[int]:
    return [s["height"] for s in summaries]


# --- ChainIndex ---


def test_adding_the_chain_in_chunks_equals_adding_it_at_once(
    chain: Chain, index: ChainIndex
) -> None:
    assert _heights(index.summaries) == list(range(len(chain.blocks)))
    assert index.next_height == len(chain.blocks)
    assert set(index.runs) == {C}
    for sizes in ((1,), (5, 17), (3, 40, 2)):
        chunked, start, turn = ChainIndex(), 0, 0
        while start < len(chain.blocks):
            size = sizes[turn % len(sizes)]
            assert chunked.add(chain.blocks[start : start + size]) == len(
                chain.blocks[start : start + size]
            )
            start, turn = start + size, turn + 1
        assert chunked.summaries == index.summaries
        assert chunked.runs == index.runs
        assert chunked.add(chain.blocks) == 0  # all repeats now


def test_blocks_that_do_not_continue_the_chain_are_ignored(chain: Chain, index: ChainIndex) -> None:
    blocks = chain.blocks
    partial = ChainIndex()
    assert partial.add(blocks[:10]) == 10
    assert partial.add(blocks[5:9]) == 0  # repeats
    assert partial.add(blocks[12:30]) == 0  # a gap: 10 and 11 are missing
    assert partial.add([blocks[10], blocks[10], blocks[11]]) == 2  # the repeat in between
    assert partial.add(reversed(blocks[12:20])) == 1  # only 12 continues; 13… came first
    assert partial.add([{**blocks[13], "height": "13"}, {**blocks[13], "height": None}]) == 0
    assert _heights(partial.summaries) == list(range(13))
    assert partial.add(blocks) == len(blocks) - 13
    assert partial.summaries == index.summaries and partial.runs == index.runs


def test_series_and_final_metrics_are_the_last_applied_report_per_round_and_site(
    chain: Chain, index: ChainIndex
) -> None:
    reports = _raw_reports(chain.blocks)
    run = index.runs[C]
    expected: dict[str, dict[str, list[Any]]] = {}
    final: dict[str, dict[str, Any]] = {}
    for (round, site), payload in sorted(reports.items()):
        line = expected.setdefault(site, {"round": [], "loss": [], "metric": [], "epoch": []})
        line["round"].append(round)
        for key in ("loss", "metric", "epoch"):
            line[key].append(payload.get(key))
        final[site] = {**{k: payload.get(k) for k in REPORT_KEYS}, "round": round}
    assert run.series() == expected
    assert run.final_metrics() == final
    assert run.sites() == chain.sites == sorted(expected)
    # the chain really holds a replaced report: site-1's round 1, reported twice
    metrics_txs = [b["tx"] for b in chain.blocks if _applied(b, "metrics")]
    assert len(metrics_txs) > len(reports)
    assert run.metrics[(1, "site-1")] == LATE_REPORT
    # and the ledger's own state agrees on every round it keeps
    for round, by_site in chain.contract["metrics"].items():
        for site, report in by_site.items():
            assert run.metrics[(int(round), site)] == {k: report.get(k) for k in REPORT_KEYS}
    # the run spans the applied calls of the contract (its creation aside)
    times = [
        b["tx"]["timestamp"]
        for b in chain.blocks
        if _tx(b).get("contract") == C
        and b["outcome"]["status"] == "applied"
        and b["tx"]["type"] != "contract_create"
    ]
    assert (run.first_time, run.last_time) == (min(times), max(times))
    assert run.duration_s() == pytest.approx(max(times) - min(times))


def test_merges_are_the_applied_merged_transactions(chain: Chain, index: ChainIndex) -> None:
    run = index.runs[C]
    raw = _raw_merges(chain.blocks)
    assert len(raw) == chain.contract["merged_rounds"] >= 2
    assert {r: (m["digest"], m["height"], m["leader"]) for r, m in run.merges.items()} == raw
    history = {record["round"]: record for record in chain.contract["history"]}
    for round, merge in run.merges.items():
        assert merge["participants"] == history[round]["participants"] == chain.sites


def test_rejected_transactions_count_for_nothing(chain: Chain, index: ChainIndex) -> None:
    run = index.runs[C]
    for what, height in chain.rejected.items():
        block = chain.blocks[height]
        assert block["tx"]["type"] == what and block["outcome"]["status"] == "rejected"
        summary = index.summaries[height]
        assert (summary["status"], summary["reason"]) == ("rejected", block["outcome"]["reason"])
        assert summary["reason"]
    assert 10_000 not in {round for round, _ in run.metrics}
    assert all(m["loss"] != 123.0 for m in run.metrics.values())
    assert BOGUS_DIGEST not in {m["digest"] for m in run.merges.values()}
    # a rejected call that would otherwise change everything changes nothing
    before = ContractRun(
        C, dict(run.settings), dict(run.metrics), dict(run.merges), run.first_time, run.last_time
    )
    merged = next(b for b in chain.blocks if _applied(b, "merged"))
    metrics = next(b for b in chain.blocks if _applied(b, "metrics"))
    create = next(b for b in chain.blocks if _applied(b, "contract_create"))
    extended = ChainIndex()
    extended.add(chain.blocks)
    forged = []
    for n, (block, payload) in enumerate(
        [
            (merged, {"digest": BOGUS_DIGEST}),
            (metrics, {"loss": -1.0, "epoch": 99}),
            (create, {"min_peers": 99}),
        ]
    ):
        outcome = {**block["outcome"], "status": "rejected", "reason": "forged"}
        forged.append(
            {
                **block,
                "height": len(chain.blocks) + n,
                "outcome": outcome,
                "tx": {**block["tx"], "payload": payload, "timestamp": 1e12},
            }
        )
    assert extended.add(forged) == 3
    assert extended.runs[C] == before
    assert [s["status"] for s in extended.summaries[-3:]] == ["rejected"] * 3


def test_search_finds_exactly_the_matching_blocks_newest_first(
    chain: Chain, index: ChainIndex
) -> None:
    blocks = chain.blocks
    newest_first = list(reversed(blocks))

    def expect(keep: Any, limit: int = 200) -> list[int]:
        return [b["height"] for b in newest_first if keep(b)][:limit]

    for height in (0, 1, chain.late_height, len(blocks) - 1):
        assert index.search(height=height) == [index.summaries[height]]
        assert index.search(height=height)[0]["hash"] == blocks[height]["hash"]
    assert index.search(height=len(blocks)) == []
    assert index.search(height=-1) == []
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"kind": "merged"}, lambda b: _raw_kind(b) == "merged"),
        ({"kind": "tick"}, lambda b: _raw_kind(b) == "tick"),
        ({"kind": "genesis"}, lambda b: b["height"] == 0),
        ({"sender": "site-2"}, lambda b: _raw_sender(b) == "site-2"),
        ({"round": 2}, lambda b: _tx(b).get("round") == 2),
        ({"round": 0}, lambda b: _tx(b).get("round") == 0),
        ({"contract": C}, lambda b: _tx(b).get("contract") == C),
        (
            {"kind": "merged", "round": 2},
            lambda b: _raw_kind(b) == "merged" and _tx(b)["round"] == 2,
        ),
        (
            {"kind": "metrics", "sender": "site-1", "round": 1, "contract": C},
            lambda b: (
                _raw_kind(b) == "metrics" and _tx(b)["sender"] == "site-1" and _tx(b)["round"] == 1
            ),
        ),
        ({"kind": "no-such-kind"}, lambda b: False),
        ({"contract": "no-such-contract"}, lambda b: False),
    ]
    for filters, keep in cases:
        found = index.search(**filters)
        assert _heights(found) == expect(keep), filters
        assert found == [index.summaries[h] for h in _heights(found)]
        assert _heights(found) == sorted(_heights(found), reverse=True)
    assert len(index.search(kind="merged")) == len(_raw_merges(blocks)) + 1  # + the rejected
    assert len(index.search(kind="metrics", sender="site-1", round=1)) == 2  # first and late
    for limit in (1, 5):
        assert _heights(index.search(kind="metrics", limit=limit)) == expect(
            lambda b: _raw_kind(b) == "metrics", limit
        )
    assert _heights(index.search(limit=3)) == [len(blocks) - 1, len(blocks) - 2, len(blocks) - 3]


def test_summaries_of_the_real_chain(chain: Chain, index: ChainIndex) -> None:
    for block, summary in zip(chain.blocks, index.summaries, strict=True):
        assert summary["height"] == block["height"] and summary["hash"] == block["hash"]
        assert summary["kind"] == _raw_kind(block) and summary["sender"] == _raw_sender(block)
        assert summary["tx_id"] == block.get("tx_id")
        if "tx" in block:
            tx = block["tx"]
            assert (summary["contract"], summary["round"]) == (tx["contract"], tx["round"])
            assert summary["time"] == tx["timestamp"]
            assert summary["status"] == block["outcome"]["status"]
        elif "tick" in block:
            assert summary["time"] == block["outcome"]["result"]["ledger_time"]
    assert index.summaries[0]["status"] == "applied" and index.summaries[0]["time"] is None


MALFORMED: list[dict[str, Any]] = [
    {"height": 0, "hash": "h0", "genesis": {"swarm": "x"}},
    {"height": 1, "tx": "not a transaction", "outcome": {"status": "rejected"}},
    {"height": 2, "tx": ["a", "list"]},
    {"height": 3, "tx": {"type": "metrics", "contract": C, "round": 1, "sender": "s"}},
    {"height": 4, "tx": {"type": None, "timestamp": "noon"}, "outcome": None},
    {
        "height": 5,
        "tx": {"type": 7, "contract": C, "payload": "x"},
        "outcome": {"status": "applied"},
    },
    {"height": 6, "tick": {"node": "n"}},
    {"height": 7, "tick": "not a tick", "outcome": {"status": "applied", "result": None}},
    {"height": 8, "tx": {}, "outcome": {"status": "applied", "result": {"events": []}}},
    {"height": 9},
]


def test_malformed_blocks_summarise_without_raising() -> None:
    summaries = [block_summary(block) for block in MALFORMED]
    assert [s["height"] for s in summaries] == list(range(len(MALFORMED)))
    assert all(isinstance(s["kind"], str) for s in summaries)
    assert summaries[0]["kind"] == "genesis" and summaries[0]["hash"] == "h0"
    assert summaries[3]["kind"] == "metrics" and summaries[3]["status"] is None  # no outcome
    assert (summaries[3]["sender"], summaries[3]["round"]) == ("s", 1)
    assert summaries[4]["kind"] == "?" and summaries[4]["time"] is None
    assert summaries[5]["kind"] == "7"
    assert (summaries[6]["kind"], summaries[6]["sender"]) == ("tick", "n")
    index = ChainIndex()
    assert index.add(MALFORMED) == len(MALFORMED)
    assert index.runs == {C: ContractRun(C)}  # block 5: applied, but with nothing in it


@pytest.mark.parametrize(
    "outcome",
    [
        "applied",
        {"status": "applied", "result": ["not", "a", "result"]},
        {"status": "applied", "result": {"events": ["not an event"]}},
        {"status": "applied", "result": {"events": [{"kind": "metrics", "member": "s"}]}},
        {"status": "applied", "result": {"events": [{"kind": "merged", "round": "two"}]}},
    ],
)
def test_a_malformed_outcome_does_not_stop_the_index(outcome: Any) -> None:
    block = {"height": 0, "tx": {"type": "metrics", "contract": C, "round": 1}, "outcome": outcome}
    index = ChainIndex()
    assert index.add([block, {"height": 1}]) == 2


def test_a_tick_with_a_malformed_result_summarises() -> None:
    block = {"height": 1, "tick": {"node": "n"}, "outcome": {"status": "applied", "result": "x"}}
    assert block_summary(block)["kind"] == "tick"


# --- views ---


def test_contract_view_of_a_missing_contract(chain: Chain, index: ChainIndex) -> None:
    view = contract_view("no-such-contract", None, index, chain.nodes, chain.ledger)
    assert view["exists"] is False and view["contract"] == "no-such-contract"
    assert (view["sites"], view["series"], view["rounds"], view["round"]) == ([], {}, [], None)


def test_contract_view_of_the_real_contract(chain: Chain, index: ChainIndex) -> None:
    state = chain.contract
    view = contract_view(C, state, index, chain.nodes, chain.ledger)
    assert view["exists"] is True and view["contract"] == C
    assert view["round"] == state["round"] and view["merged_rounds"] == state["merged_rounds"]
    assert view["leader"] == state["current"]["leader"]
    assert view["all_finished"] is True and view["settings"] == state["settings"]
    assert [s["name"] for s in view["sites"]] == chain.sites == sorted(state["members"])
    for site in view["sites"]:
        name = site["name"]
        last = max(int(r) for r, by in state["metrics"].items() if name in by)
        report = state["metrics"][str(last)][name]
        assert {k: site[k] for k in REPORT_KEYS} == {k: report[k] for k in REPORT_KEYS}
        assert site["progress"] == min(1.0, report["epoch"] / report["total_epochs"])
        assert site["finished"] is state["members"][name]["finished"] is True
        assert site["ready"] == (name in state["current"]["ready"])
    assert view["series"] == index.runs[C].series()
    raw = _raw_merges(chain.blocks)
    rounds = view["rounds"]
    assert [r["round"] for r in rounds] == [h["round"] for h in reversed(state["history"])]
    assert [r["round"] for r in rounds] == sorted(raw, reverse=True)
    for row in rounds:
        digest, height, leader = raw[row["round"]]
        assert (row["digest"], row["merged_height"], row["leader"]) == (digest, height, leader)
        assert row["status"] == "merged" and row["voided"] is False
        assert chain.blocks[row["merged_height"]]["tx"]["payload"]["digest"] == row["digest"]
    merges = view["merges"]
    assert [(m["round"], m["digest"], m["height"]) for m in merges] == [
        (r, d, h) for r, (d, h, _) in sorted(raw.items(), reverse=True)
    ]


def test_round_phases_are_the_means_of_the_sites_reports(chain: Chain, index: ChainIndex) -> None:
    reports = _raw_reports(chain.blocks)
    rows = round_rows(chain.contract, index.runs[C])
    partial = False  # some phase that not every site reported (the leader sends nothing)
    for row in rows:
        by_site = [p.get("phases") or {} for (r, _), p in reports.items() if r == row["round"]]
        expected = {}
        for phase in ROUND_PHASES:
            values = [phases[phase] for phases in by_site if phases.get(phase) is not None]
            if values:
                expected[phase] = sum(values) / len(values)
                partial |= len(values) < len(chain.sites)
        assert row["phases"] == pytest.approx(expected), row["round"]
    assert sum(1 for row in rows if row["phases"]) >= len(rows) - 1
    assert partial
    # the late report of round 1 carried no phases: only the other two sites count there
    assert len([p for (r, _), p in reports.items() if r == 1 and p.get("phases")]) == 2


def test_round_phases_by_hand() -> None:
    state = {
        "history": [{"round": 3, "status": "merged"}, {"round": 4, "status": "aborted"}],
        "metrics": {
            "3": {
                "a": {"phases": {"encode": 1.0, "total": 3.0}},
                "b": {"phases": {"encode": 3.0, "merge": None}},
                "c": {"phases": None},
                "d": {},
            }
        },
    }
    rows = round_rows(state, None)
    assert [r["round"] for r in rows] == [4, 3]
    assert rows[0]["phases"] == {} and rows[0]["merged_height"] is None
    assert rows[1]["phases"] == {"encode": 2.0, "total": 3.0}


def test_swarm_view_lists_nodes_contracts_and_peers(chain: Chain) -> None:
    view = swarm_view(chain.ledger, chain.nodes, None)
    ledger_nodes = [
        a["name"] for a in chain.blocks[0]["genesis"]["admitted"] if a["role"] == "ledger"
    ]
    assert [n["endpoint"] for n in view["nodes"]] == sorted(chain.endpoints)
    assert [n["node"] for n in view["nodes"]] == ledger_nodes
    assert all(n["healthy"] and n["error"] is None for n in view["nodes"])
    assert [n["height"] for n in view["nodes"]] >= [chain.ledger["height"]] * len(ledger_nodes)
    assert view["swarm"] == chain.ledger["swarm"] and view["error"] is None
    assert [c["contract"] for c in view["contracts"]] == [C]
    row = view["contracts"][0]
    assert (row["members"], row["finished"], row["all_finished"]) == (3, 3, True)
    assert list(view["peers"]) == [C]
    peers = view["peers"][C]
    assert [p["name"] for p in peers] == chain.sites
    members = chain.ledger["contracts"][C]["members"]
    assert [p["endpoint"] for p in peers] == [members[s]["endpoint"] for s in chain.sites]
    assert view["tasks"] == [] and view["operators"] == {}
    down = swarm_view(chain.ledger, {"10.0.0.9:1": {"error": "unreachable"}}, "all down")
    assert down["error"] == "all down"
    assert down["nodes"][0]["healthy"] is False and down["nodes"][0]["error"] == "unreachable"


def test_experiments_view_holds_the_run(chain: Chain, index: ChainIndex) -> None:
    saved = [{"id": "x", "title": "kept"}]
    view = experiments_view(index, chain.ledger, saved)
    assert view["swarm"] == chain.ledger["swarm"] and view["saved"] == saved
    [record] = view["live"]
    assert record["contract"] == C and record["finished"] is True
    assert record["rounds"] == chain.contract["merged_rounds"]
    assert record["final"] == index.runs[C].final_metrics()
    assert record["settings"] == chain.contract["settings"]
    assert json.loads(json.dumps(record)) == record  # what the store keeps round-trips


# --- ExperimentStore ---

RECORD = {"contract": "c", "rounds": 2, "final": {"s": {"metric": 0.5}}}


def _no_tmp(folder: Path) -> None:
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_experiments_save_list_annotate_delete(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "e.json"
    store = ExperimentStore(path)
    assert store.list() == [] and not path.exists()
    first = store.save(RECORD, title="first run", note="lr 0.2", swarm="s1")
    second = store.save({**RECORD, "contract": "d"}, title="second", swarm=None)
    _no_tmp(path.parent)
    assert first["id"] != second["id"]
    assert (first["title"], first["note"], first["swarm"], first["record"]) == (
        "first run",
        "lr 0.2",
        "s1",
        RECORD,
    )
    assert second["note"] == ""
    assert ExperimentStore(path).list() == [first, second]  # it is on disk
    changed = store.annotate(first["id"], note="better than expected")
    assert changed == {**first, "note": "better than expected"}
    renamed = store.annotate(second["id"], title="t" * MAX_TITLE)
    assert renamed["note"] == "" and renamed["title"] == "t" * MAX_TITLE
    assert ExperimentStore(path).list() == [changed, renamed]
    store.delete(first["id"])
    assert ExperimentStore(path).list() == [renamed]
    store.delete(second["id"])
    assert json.loads(path.read_text()) == {"experiments": []}
    _no_tmp(path.parent)


@pytest.mark.parametrize(
    ("title", "note", "message"),
    [
        ("", "", "needs a title"),
        ("  \n", "", "needs a title"),
        ("t" * (MAX_TITLE + 1), "", f"title has {MAX_TITLE + 1} characters; at most {MAX_TITLE}"),
        ("ok", "n" * (MAX_NOTE + 1), f"note has {MAX_NOTE + 1} characters; at most {MAX_NOTE}"),
        (None, "", "the title must be text"),
        (5, "", "the title must be text"),
        ("ok", ["a"], "the note must be text"),
    ],
)
def test_experiments_refuse_bad_text(tmp_path: Path, title: Any, note: Any, message: str) -> None:
    path = tmp_path / "e.json"
    store = ExperimentStore(path)
    kept = store.save(RECORD, title="kept", swarm=None)
    before = path.read_bytes()
    with pytest.raises(ExperimentError, match=message):
        store.save(RECORD, title=title, note=note, swarm=None)
    if title is not None and not (isinstance(title, str) and not title.strip()):
        with pytest.raises(ExperimentError, match=message):
            store.annotate(kept["id"], title=title, note=note)
    assert path.read_bytes() == before
    _no_tmp(tmp_path)


def test_experiments_refuse_unknown_ids_and_a_full_file(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    store = ExperimentStore(path)
    store.save(RECORD, title="only", swarm=None)
    before = path.read_bytes()
    with pytest.raises(ExperimentError, match=r"no saved experiment with id 'nope'"):
        store.annotate("nope", note="x")
    with pytest.raises(ExperimentError, match=r"no saved experiment with id 'nope'"):
        store.delete("nope")
    assert path.read_bytes() == before
    full = [{"id": f"{n:012x}", "title": "t", "note": "", "record": {}} for n in range(MAX_SAVED)]
    path.write_text(json.dumps({"experiments": full}))
    with pytest.raises(ExperimentError, match=f"already holds {MAX_SAVED} experiments; delete"):
        store.save(RECORD, title="one too many", swarm=None)
    assert len(store.list()) == MAX_SAVED


def test_annotate_refuses_an_empty_title(tmp_path: Path) -> None:
    store = ExperimentStore(tmp_path / "e.json")
    kept = store.save(RECORD, title="kept", swarm=None)
    with pytest.raises(ExperimentError, match="needs a title"):
        store.annotate(kept["id"], title=" ")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"{not json", "move it aside or pass another --experiments file"),
        (b"\xff\xfe\x00", "move it aside or pass another --experiments file"),
        (b"[1, 2]", "no 'experiments' list"),
        (b'{"experiments": {"a": 1}}', "no 'experiments' list"),
    ],
)
def test_a_corrupt_experiments_file_is_named_and_never_overwritten(
    tmp_path: Path, content: bytes, says: str
) -> None:
    path = tmp_path / "e.json"
    path.write_bytes(content)
    store = ExperimentStore(path)
    for attempt in (
        store.list,
        lambda: store.save(RECORD, title="t", swarm=None),
        lambda: store.annotate("abc", note="n"),
        lambda: store.delete("abc"),
    ):
        with pytest.raises(ExperimentError) as refused:
            attempt()
        assert str(path) in str(refused.value) and says in str(refused.value)
    assert path.read_bytes() == content
    # nothing beside it but the lock dashboards share the file with
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.json", "e.json.lock"]


def test_concurrent_saves_all_land(tmp_path: Path) -> None:
    path = tmp_path / "e.json"
    store = ExperimentStore(path)

    def save_five(n: int) -> None:
        for k in range(5):
            store.save(RECORD, title=f"{n}-{k}", swarm=None)

    threads = [threading.Thread(target=save_five, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    titles = sorted(e["title"] for e in ExperimentStore(path).list())
    assert titles == sorted(f"{n}-{k}" for n in range(6) for k in range(5))
    _no_tmp(tmp_path)


def test_default_experiments_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENSWARM_EXPERIMENTS", str(tmp_path / "mine.json"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_experiments_file() == tmp_path / "mine.json"
    monkeypatch.delenv("OPENSWARM_EXPERIMENTS")
    assert default_experiments_file() == tmp_path / "xdg" / "openswarm" / "experiments.json"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "share" / "openswarm" / "experiments.json"
    assert default_experiments_file() == expected


# --- access ---


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("localhost.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("198.51.100.7", False),
        ("[2001:db8::1]", False),
        ("dashboard.example.org", False),
        ("localhost.example.org", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_access_for_listen() -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        assert Access.for_listen(host) == Access("open")
        assert Access.for_listen(host, mtls=True) == Access("mtls")
    for host in ("0.0.0.0", "198.51.100.7", "dashboard.example.org"):
        access = Access.for_listen(host)
        assert access.mode == "token" and isinstance(access.token, str)
        assert len(access.token) >= 32
        assert Access.for_listen(host, mtls=True) == Access("mtls")
    assert Access.for_listen("0.0.0.0").token != Access.for_listen("0.0.0.0").token


def _message(**headers: str) -> http.client.HTTPMessage:
    """Headers as the server's handler has them (case-insensitive)."""
    raw = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return http.client.parse_headers(io.BytesIO(raw.encode("latin-1")))


def test_token_matches_the_three_ways_and_nothing_else() -> None:
    access = Access("token", "s3cret-token_value")
    token = "s3cret-token_value"
    assert access.token_matches({"Authorization": f"Bearer {token}"}, None)
    assert access.token_matches({"Authorization": f"Bearer {token} "}, None)
    assert access.token_matches(_message(authorization=f"Bearer {token}"), None)
    assert access.token_matches({"Cookie": f"{COOKIE}={token}"}, None)
    assert access.token_matches({"Cookie": f"theme=dark; {COOKIE}={token}; x=1"}, None)
    assert access.token_matches(_message(cookie=f"{COOKIE}={token}"), None)
    assert access.token_matches({}, token)
    assert access.token_matches({"Authorization": "Bearer wrong"}, token)  # any one will do
    refused: list[tuple[dict[str, str], str | None]] = [
        ({}, None),
        ({}, ""),
        ({}, "wrong"),
        ({}, token[:-1]),
        ({}, token + "x"),
        ({"Authorization": "Bearer "}, None),
        ({"Authorization": "Bearer wrong"}, None),
        ({"Authorization": f"bearer {token}"}, None),
        ({"Authorization": f"Basic {token}"}, None),
        ({"Authorization": token}, None),
        ({"Cookie": f"{COOKIE}=wrong"}, None),
        ({"Cookie": f"other={token}"}, None),
        ({"Cookie": f"{COOKIE}="}, None),
        ({"X-Token": token}, None),
    ]
    for headers, query in refused:
        assert not access.token_matches(headers, query), (headers, query)
    everything = ({"Authorization": f"Bearer {token}", "Cookie": f"{COOKIE}={token}"}, token)
    for other in (
        Access("open"),
        Access("mtls"),
        Access("open", token),
        Access("token", None),
        Access("token", ""),
    ):
        assert not other.token_matches(*everything), other
    assert not Access("token", "").token_matches({"Authorization": "Bearer "}, "")


@pytest.mark.parametrize(
    "cookie",
    [
        '"',
        f'{COOKIE}="unterminated',
        "=;=;=",
        f"{COOKIE}",
        "a=b; \x00; \x7f=\x7f",
        f"{COOKIE}=\\x; $Path=/",
        "Ā=ā; ☃=☃",
        ";" * 10_000,
    ],
)
def test_a_malformed_cookie_is_no_credential(cookie: str) -> None:
    access = Access("token", "s3cret")
    assert access.token_matches({"Cookie": cookie}, None) is False
    assert access.token_matches({"Cookie": cookie}, "s3cret") is True  # other ways still work


def test_allowed_hosts() -> None:
    hosts = allowed_hosts("127.0.0.1", 8080)
    for host in ("localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080", "127.0.0.1"):
        assert host in hosts
    for host in ("evil.example:8080", "localhost:8081", "127.0.0.1:80", "", "0.0.0.0:8080"):
        assert host not in hosts
    assert "dash.example.org:9000" in allowed_hosts("dash.example.org", 9000)


# --- parse_listen ---


@pytest.mark.parametrize(
    ("listen", "parsed"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:8443", ("::1", 8443)),
        ("[2001:db8::1]:1", ("2001:db8::1", 1)),
        ("dash.example.org:80", ("dash.example.org", 80)),
    ],
)
def test_parse_listen(listen: str, parsed: tuple[str, int]) -> None:
    assert parse_listen(listen) == parsed


@pytest.mark.parametrize(
    "listen",
    [
        "127.0.0.1",
        "127.0.0.1:",
        ":8080",
        "127.0.0.1:70000",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:80a",
        "127.0.0.1: 80",
        "[::1]",
        "",
        ":",
    ],
)
def test_parse_listen_refuses(listen: str) -> None:
    with pytest.raises(UiError) as refused:
        parse_listen(listen)
    assert repr(listen) in str(refused.value) and "HOST:PORT" in str(refused.value)


@pytest.mark.parametrize("listen", ["[]:8080", "127.0.0.1:²"])
def test_parse_listen_refuses_an_empty_bracketed_host_and_odd_digits(listen: str) -> None:
    with pytest.raises(UiError, match="HOST:PORT"):
        parse_listen(listen)


def _report_block(height: int, round: int, site: str, loss: float) -> dict[str, Any]:
    event = {"kind": "metrics", "round": round, "member": site, "loss": loss, "metric": 0.5,
             "epoch": 1, "total_epochs": 2}  # fmt: skip
    tx = {"type": "metrics", "contract": "thin", "round": round, "sender": site,
          "timestamp": 1.0 + height, "payload": {}}  # fmt: skip
    return {"height": height, "hash": f"{height:064x}", "tx": tx,
            "outcome": {"status": "applied", "result": {"events": [event]}}}  # fmt: skip


def test_curves_follow_a_replaced_report_and_stay_small() -> None:
    """A page's curves: a report that replaces an earlier one shows at once (the cached
    curves are recomputed), and a long run is sent as at most MAX_POINTS points a site,
    its first and last rounds kept."""
    index = ChainIndex()
    index.add([{"height": 0, "hash": "0" * 64, "genesis": {}}])
    index.add([_report_block(h, h, "site-1", 1.0) for h in range(1, 2501)])
    run = index.runs["thin"]
    assert run.series()["site-1"]["loss"][0] == 1.0
    index.add([_report_block(2501, 1, "site-1", 0.25)])  # round 1 reported again
    assert run.series()["site-1"]["loss"][0] == 0.25
    line = thinned(run.series())["site-1"]
    assert len(line["round"]) == MAX_POINTS
    assert (line["round"][0], line["round"][-1]) == (1, 2500)
    assert line["round"] == sorted(set(line["round"]))
    assert thinned(run.series(), most=5000)["site-1"] == run.series()["site-1"]

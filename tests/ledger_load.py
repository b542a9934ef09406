"""Ledger client for the multi-host tests, run inside a NetnsLab host (the test process
cannot reach the lab's addresses). Prints one JSON object on stdout, last.

    ledger_load.py ready     --endpoints A,B --pki DIR [--ready-s S]
    ledger_load.py submit    --endpoints A,B,C --pki DIR --names p1,p2,p3 [--count N]
                             [--epoch E] [--register]
    ledger_load.py submit-tx --endpoints A,B,C --pki DIR --identity p2 --tx FILE
                             [--repeat N] [--retry-s S]

Every command also takes --timeout S (seconds per call, default 20) and --ready A,B
[--ready-s S]: first wait until those endpoints are ready. `ready` polls each endpoint
until it reports quorum and ledger time. `submit` signs and submits, from one thread per
identity, a `register` (with --register) and N `metrics` transactions for the default
contract; an identity stops at its first failure. `submit-tx` submits a transaction signed
beforehand (its JSON) N times, retrying transient failures for up to --retry-s seconds.

Exit status: 0 everything done (and applied), 2 a submission failed with "no quorum"
(NoQuorumError), 1 anything else; the JSON says what ("error", or each failed "txs" entry).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerClient, LedgerError, NoQuorumError, Outcome
from openswarm.ledger.tx import Transaction, make_transaction
from openswarm.pki import Identity

OK, FAILED, NO_QUORUM = 0, 1, 2


def metrics_payload(epoch: int) -> dict[str, Any]:
    return {"loss": 1.0 / (epoch + 1), "metric": 0.5, "epoch": epoch, "total_epochs": 1000}


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def outcome_dict(outcome: Outcome) -> dict[str, Any]:
    return {"height": outcome.height, "status": outcome.status, "reason": outcome.reason}


def identity(pki: Path, name: str) -> Identity:
    return Identity.load(pki / "identities" / name)


# --- ready ----------------------------------------------------------------------------------
def probe(endpoint: str, admin: Identity) -> tuple[bool, dict[str, Any]]:
    try:
        with LedgerClient([endpoint], admin, timeout_s=3) as client:
            status = client.status()
    except LedgerError as exc:
        return False, {"error": describe(exc)}
    seen = {k: status.get(k) for k in ("node", "height", "has_quorum", "ledger_time", "halted")}
    return bool(status["has_quorum"] and status["ledger_time"] > 0 and not status["halted"]), seen


def wait_ready(endpoints: list[str], pki: Path, timeout_s: float) -> dict[str, Any]:
    """Poll each endpoint until it reports quorum and ledger time, or the time is up."""
    admin = identity(pki, "admin")
    deadline = time.monotonic() + timeout_s
    pending = list(endpoints)
    seen: dict[str, Any] = {}
    started = time.monotonic()
    while pending:
        ok, seen[pending[0]] = probe(pending[0], admin)
        if ok:
            pending.pop(0)
        elif time.monotonic() > deadline:
            break
        else:
            time.sleep(0.1)
    waited = round(time.monotonic() - started, 3)
    return {"ready": not pending, "pending": pending, "status": seen, "seconds": waited}


# --- submit ---------------------------------------------------------------------------------
def submit(args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        try:
            send(name)
        except Exception as exc:  # setting up, not one submission: still in the summary
            with lock:
                results.append({"sender": name, "error": describe(exc)})

    def send(name: str) -> None:
        me = identity(args.pki, name)
        calls: list[tuple[str, dict[str, Any], int]] = []
        if args.register:
            calls.append(("register", {"endpoint": f"127.0.0.1:{len(name)}"}, 0))
        calls += [
            ("metrics", metrics_payload(e), 1) for e in range(args.epoch, args.epoch + args.count)
        ]
        with LedgerClient(args.endpoints, me, timeout_s=args.timeout) as client:
            for tx_type, payload, round_ in calls:
                tx = make_transaction(me, tx_type, contract=DEFAULT_CONTRACT, round=round_,
                                      payload=payload)  # fmt: skip
                entry: dict[str, Any] = {"sender": name, "type": tx_type, "tx_id": tx.tx_id,
                                         "epoch": payload.get("epoch")}  # fmt: skip
                started = time.monotonic()
                try:
                    entry.update(outcome_dict(client.submit_tx(tx)))
                except LedgerError as exc:
                    entry["error"] = describe(exc)
                    entry["no_quorum"] = isinstance(exc, NoQuorumError)
                except Exception as exc:  # reported, never a traceback without a summary
                    entry["error"] = describe(exc)
                entry["seconds"] = round(time.monotonic() - started, 3)
                with lock:
                    results.append(entry)
                if "error" in entry:
                    return  # the rest of this identity's transactions are not attempted

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(n,)) for n in args.names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [r for r in results if "error" in r or r.get("status") != "applied"]
    summary = {
        "ok": not failed,
        "txs": results,
        "failed": failed,
        "no_quorum": any(r.get("no_quorum") for r in failed),
        "seconds": round(time.monotonic() - started, 3),
    }
    print(json.dumps(summary))
    if summary["no_quorum"]:
        return NO_QUORUM
    return FAILED if failed else OK


# --- submit-tx ------------------------------------------------------------------------------
def submit_tx(args: argparse.Namespace) -> int:
    tx = Transaction.from_dict(json.loads(args.tx.read_text()))
    summary: dict[str, Any] = {"ok": False, "tx_id": tx.tx_id, "outcomes": [], "attempts": []}
    started = time.monotonic()
    code = OK
    with LedgerClient(args.endpoints, identity(args.pki, args.identity),
                      timeout_s=args.timeout) as client:  # fmt: skip
        for _ in range(args.repeat):
            deadline = time.monotonic() + args.retry_s
            while True:
                try:
                    outcome = client.submit_tx(tx)
                except LedgerError as exc:
                    summary["attempts"].append(describe(exc))
                    if exc.transient and time.monotonic() < deadline:
                        time.sleep(0.5)
                        continue
                    summary["error"] = describe(exc)
                    summary["no_quorum"] = isinstance(exc, NoQuorumError)
                    code = NO_QUORUM if summary["no_quorum"] else FAILED
                    break
                summary["outcomes"].append(outcome_dict(outcome))
                if not outcome.applied:
                    code = FAILED
                break
            if code != OK:
                break
    summary["ok"] = code == OK
    summary["seconds"] = round(time.monotonic() - started, 3)
    print(json.dumps(summary))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def endpoints(text: str) -> list[str]:
        return [e for e in text.split(",") if e]

    def command(name: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name)
        sub.add_argument("--endpoints", required=True, type=endpoints)
        sub.add_argument("--pki", required=True, type=Path, help="the network's pki folder")
        sub.add_argument("--timeout", type=float, default=20.0, help="seconds per call")
        sub.add_argument("--ready", type=endpoints, default=[],
                         help="first wait until these endpoints are ready")  # fmt: skip
        sub.add_argument("--ready-s", type=float, default=60.0, help="how long to wait for that")
        return sub

    command("ready")
    sub = command("submit")
    sub.add_argument("--names", required=True, type=lambda s: s.split(","))
    sub.add_argument("--count", type=int, default=5)
    sub.add_argument("--epoch", type=int, default=0)
    sub.add_argument("--register", action="store_true")
    sub = command("submit-tx")
    sub.add_argument("--identity", required=True)
    sub.add_argument("--tx", required=True, type=Path, help="a signed transaction (JSON)")
    sub.add_argument("--retry-s", type=float, default=0.0, help="retry transient failures")
    sub.add_argument("--repeat", type=int, default=1, help="submit it this many times")
    args = parser.parse_args(argv)
    if args.command == "ready":
        args.ready = args.ready or args.endpoints
    if args.ready:
        waited = wait_ready(args.ready, args.pki, args.ready_s)
        if not waited["ready"] or args.command == "ready":
            print(json.dumps({"ok": waited["ready"], "error": None if waited["ready"] else
                              "ledger nodes not ready", "wait": waited}))  # fmt: skip
            return OK if waited["ready"] else FAILED
    run = {"submit": submit, "submit-tx": submit_tx}[args.command]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

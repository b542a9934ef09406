"""A peer with a valid certificate puts markup where the dashboard shows it: payload field
names that the ledger rejects but records in the rejection reason, an endpoint it accepts,
and a contract name in a link. In the system's Chromium every such text stays text: it reads
back literally, no element of it exists, the page title is unchanged and no alert opens."""

from __future__ import annotations

import base64
import json
import secrets
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from dashboard import chromium, screenshot, ui_process
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.support.ui import WebDriverWait

from openswarm import DEFAULT_CONTRACT
from openswarm.ledger.client import LedgerError
from openswarm.ledger.local import LocalLedger
from openswarm.ledger.tx import Transaction

pytestmark = pytest.mark.slow

IMG = """<img src=x onerror="document.title='pwned'">"""
SCRIPT = "<script>document.title='pwned';alert('pwned')</script>"
#: An endpoint the contract accepts: any host, a colon and a port.
ENDPOINT = f"{SCRIPT}:443"

# Pages redraw whenever the ledger moves: read through scripts, never element handles.
TEXTS = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)"
ATTRS = (
    "return [...document.querySelectorAll(arguments[0])].map((e) => e.getAttribute(arguments[1]))"
)
CLICK = "document.querySelectorAll(arguments[0]).forEach((e) => e.click())"
#: Whatever markup took effect: images, scripts, event-handler attributes, the title.
DOM = """return {
  imgs: document.querySelectorAll("img").length,
  scripts: [...document.querySelectorAll("script")].map((s) => s.getAttribute("src")),
  handlers: [...document.querySelectorAll("*")].flatMap((e) => [...e.attributes]
    .filter((a) => a.name.toLowerCase().startsWith("on")).map((a) => e.tagName + "." + a.name)),
  title: document.title,
  text: document.body.textContent,
}"""
#: Markup put in through innerHTML (what the page must never do): the checks above see it.
CONTROL = """const done = arguments[arguments.length - 1];
const violations = [];
document.addEventListener("securitypolicyviolation", (e) => violations.push(e.violatedDirective));
const box = document.createElement("div");
box.id = "control";
box.innerHTML = arguments[0];
document.body.append(box);
setTimeout(() => done({imgs: document.querySelectorAll("#control img").length,
                       title: document.title, violations}), 1000);"""


def _submit_hostile(net: LocalLedger) -> dict[int, dict[str, Any]]:
    """The attacker's transactions, as p1; returns height → its block as the ledger keeps it."""
    heights = []
    with net.client("p1") as peer:
        attempts = [
            ("register", {"endpoint": "127.0.0.1:9", IMG: True}, "rejected"),
            ("register", {"endpoint": IMG}, "rejected"),
            ("register", {"endpoint": ENDPOINT}, "applied"),
            ("metrics", {"loss": 1.0, "epoch": 0, SCRIPT: 1}, "rejected"),
        ]
        for tx_type, payload, status in attempts:
            outcome = peer.submit(tx_type, contract=DEFAULT_CONTRACT, round=1, payload=payload)
            assert outcome.status == status, outcome
            heights.append(outcome.height)
        # a hostile type never reaches the chain: refused before ordering, by name
        height = peer.status()["height"]
        identity = net.identity("p1")
        forged = Transaction(
            type=IMG,
            contract=DEFAULT_CONTRACT,
            round=1,
            sender="p1",
            nonce=secrets.token_hex(16),
            payload={},
            timestamp=time.time(),
            cert=identity.cert_pem.decode("ascii"),
        )
        signature = base64.b64encode(identity.sign(forged.signed_bytes())).decode("ascii")
        with pytest.raises(LedgerError, match=r"INVALID_ARGUMENT.*unknown transaction type"):
            peer.call("Submit", {"tx": {**forged.body(), "signature": signature}})
        assert peer.status()["height"] == height
        blocks = {b["height"]: b for b in peer.blocks(min(heights), max(heights))}
    for height in heights:
        block = blocks[height]
        if block["outcome"]["status"] == "rejected":
            reason = block["outcome"]["reason"]
            assert "<img src=x onerror=" in reason or SCRIPT in reason, reason
    return blocks


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.headers.get_content_type() == "application/json"
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp, csp
        return json.loads(answer.read())


def _inert(driver: Any, title: str) -> dict[str, Any]:
    """The page holds no element, handler or script of the attacker's, and its title."""
    dom = driver.execute_script(DOM)
    assert dom["imgs"] == 0, dom
    assert dom["scripts"] == ["/static/app.js"], dom
    assert dom["handlers"] == [], dom
    assert dom["title"] == title
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is the check
    return dom


def test_markup_from_a_peer_stays_text(ledger1: LocalLedger, tmp_path: Path) -> None:
    blocks = _submit_hostile(ledger1)
    rejected = {h: b for h, b in blocks.items() if b["outcome"]["status"] == "rejected"}
    admin = str(ledger1.identity_dir("admin"))
    with (
        ui_process(
            "--connect",
            ",".join(ledger1.endpoints),
            "--identity",
            admin,
            "--listen",
            "127.0.0.1:0",
            "--experiments",
            str(tmp_path / "e.json"),
        ) as (_, url),
        chromium(tmp_path / "profile") as driver,
    ):
        wait = WebDriverWait(driver, 30, poll_frequency=0.1)
        # the server passes the text on as the chain has it (rendering alone keeps it text)
        ledger = _get_json(f"{url}api/ledger")
        shown = {b["height"]: b for b in ledger["blocks"]}
        for height, block in blocks.items():
            assert shown[height]["reason"] == block["outcome"]["reason"]
            assert shown[height]["kind"] == block["tx"]["type"]
            whole = _get_json(f"{url}api/block/{height}")
            assert whole["tx"]["payload"] == block["tx"]["payload"]
            assert whole["outcome"] == block["outcome"]
        peers = _get_json(f"{url}api/swarm")["peers"][DEFAULT_CONTRACT]
        assert [(p["name"], p["endpoint"]) for p in peers] == [("p1", ENDPOINT)]

        # the Ledger page: each rejection reason reads back literally
        driver.get(f"{url}ledger")
        wanted = {str(h) for h in blocks}
        wait.until(lambda d: wanted <= set(d.execute_script(ATTRS, "tr.block-row", "data-height")))
        cells = driver.execute_script(TEXTS, "tr.block-row td")
        for block in rejected.values():
            assert f"rejected: {block['outcome']['reason']}" in cells
        dom = _inert(driver, "openswarm · Ledger")
        assert IMG.replace("'", "\\'") in dom["text"] and SCRIPT in dom["text"]

        # a rejected block in full: its payload, markup and all, as JSON text
        height = min(rejected)
        _click(driver, f"tr.block-row[data-height='{height}']")
        wait.until(lambda d: "onerror" in (_text(d, "#block-detail") or ""))
        detail = json.loads(_text(driver, "#block-detail") or "")
        assert detail["tx"]["payload"] == {"endpoint": "127.0.0.1:9", IMG: True}
        _inert(driver, "openswarm · Ledger")
        screenshot(driver, "xss-ledger")

        # the Swarm page shows the endpoint the contract accepted
        driver.get(url)
        wait.until(lambda d: d.execute_script(ATTRS, "tr.peer-row", "data-peer") == ["p1"])
        assert driver.execute_script(TEXTS, "tr.peer-row td")[1] == ENDPOINT
        _inert(driver, "openswarm · Swarm")
        screenshot(driver, "xss-swarm")

        # a link to a contract named by markup: the name is text in the title and the page
        driver.get(f"{url}contract/{quote(IMG, safe='')}")
        wait.until(lambda d: _text(d, "h1") == f"Contract {IMG}")
        _inert(driver, f"openswarm · Contract {IMG}")
        screenshot(driver, "xss-contract")

        # the checks would see markup that got in; and the page's policy would still stop it
        driver.set_script_timeout(10)
        control = driver.execute_async_script(CONTROL, IMG)
        assert control["imgs"] == 1, control
        assert control["title"] == f"openswarm · Contract {IMG}", control
        assert any(v.startswith("script-src") for v in control["violations"]), control


def _text(driver: Any, css: str) -> str | None:
    found = driver.execute_script(TEXTS, css)
    return found[0] if found else None


def _click(driver: Any, css: str) -> None:
    driver.execute_script(CLICK, css)

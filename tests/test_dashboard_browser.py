"""The dashboard in a real browser (the system's Chromium through Selenium) on a real
three-site swarm: every page opens, values change while training runs without a reload, the
ledger explorer finds a merge by round and verifies the chain, and two runs are saved and
compared. Screenshots of every page are kept in test-artifacts/dashboard/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from dashboard import chromium, screenshot, ui_process
from harness import Swarm
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from openswarm import DEFAULT_CONTRACT

pytestmark = pytest.mark.slow

SECOND = "digits-slow-lr"


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Swarm]:
    swarm = Swarm(tmp_path / "swarm", 3)
    try:
        yield swarm
    finally:
        swarm.close()


# Pages redraw whenever the ledger moves: read and click in one script, never through
# element handles that a redraw may have replaced.
TEXTS = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)"
ATTRS = (
    "return [...document.querySelectorAll(arguments[0])].map((e) => e.getAttribute(arguments[1]))"
)
PICK = "document.getElementById('save-contract').value = arguments[0]"
CLICK = "document.querySelectorAll(arguments[0]).forEach((e) => e.click())"
SITES = """return Object.fromEntries([...document.querySelectorAll("tr.site-row")].map((r) =>
  [r.dataset.site,
   ["epoch", "loss", "metric"].map((c) => r.querySelector("td." + c).textContent)]))"""


def _texts(driver, css: str) -> list[str]:
    return driver.execute_script(TEXTS, css)


def _text(driver, css: str) -> str | None:
    found = _texts(driver, css)
    return found[0] if found else None


def _click(driver, css: str) -> None:
    driver.execute_script(CLICK, css)


def _site_values(driver) -> dict[str, list[str]]:
    return driver.execute_script(SITES)


def test_pages_follow_a_training_swarm_live(swarm: Swarm, tmp_path: Path) -> None:
    hold = tmp_path / "go"
    admin = str(swarm.ledger.identity_dir("admin"))
    ledger = ",".join(swarm.ledger.endpoints)
    experiments = tmp_path / "experiments.json"
    with (
        ui_process("--connect", ledger, "--identity", admin, "--listen", "127.0.0.1:0",
                   "--experiments", str(experiments)) as (_, url),
        chromium(tmp_path / "profile") as driver,
    ):  # fmt: skip
        wait = WebDriverWait(driver, 120, poll_frequency=0.1)
        # the sites train one epoch, then wait for the test before the second
        swarm.start_all(EPOCHS="3", MIN_PEERS="3", HOLD_FILE=str(hold), HOLD_EPOCH="1", AUDIT="1")

        driver.get(url)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.peer-row")) == 3)
        assert sorted(_texts(driver, "tr.peer-row td:first-child")) == swarm.names
        assert _texts(driver, "#nodes td.ok") == ["healthy"]
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, f"tr[data-contract='{DEFAULT_CONTRACT}']")
        )
        screenshot(driver, "1-swarm")

        driver.get(f"{url}contract/{quote(DEFAULT_CONTRACT)}")
        # all three sites reported rounds of their first epoch (epoch 0), and are held there
        wait.until(lambda d: sorted(v[0] for v in _site_values(d).values()) == ["0/3"] * 3)
        before_round = _text(driver, "#round")
        before_sites = _site_values(driver)
        assert len(_texts(driver, "#chart-metric polyline")) == 3
        driver.execute_script("window.sameDocument = 'yes'")
        updates = int(driver.execute_script("return document.body.dataset.updates"))
        screenshot(driver, "2-contract-held")

        hold.touch()  # training goes on; the open page must follow without a reload
        wait.until(lambda d: _text(d, "#round") != before_round)
        wait.until(lambda d: all(
            v[0] != before_sites[site][0] for site, v in _site_values(d).items()
        ))  # fmt: skip
        assert driver.execute_script("return window.sameDocument") == "yes"
        assert int(driver.execute_script("return document.body.dataset.updates")) > updates
        assert int(_text(driver, "#round")) > int(before_round)
        swarm.wait()
        wait.until(lambda d: d.find_elements(By.ID, "all-finished"))
        final = _site_values(driver)
        assert all(v[0] == "3/3" for v in final.values()), final
        assert driver.execute_script("return window.sameDocument") == "yes"
        state = swarm.state()
        assert _text(driver, "#round") == str(state["round"])
        # the page shows the ledger's own last report of each site
        for site, (_, loss, metric) in final.items():
            last = max((int(r), m[site]) for r, m in state["metrics"].items() if site in m)[1]
            assert (loss, metric) == (f"{last['loss']:.4f}", f"{last['metric']:.4f}")
        # each merge was audited (one auditor a round); the page says who agreed
        cells = driver.execute_script(
            "return Object.fromEntries([...document.querySelectorAll('tr.round-row')]"
            ".map((r) => [r.dataset.round, r.querySelector('td.audit').textContent]))"
        )
        agreed = 0
        for record in state["history"]:
            audit = record.get("audit") or {}
            for auditor, said in (audit.get("attestations") or {}).items():
                if said.startswith(f"{record['digest']}:"):
                    assert f"{auditor} agreed" in cells[str(record["round"])], (record, cells)
                    agreed += 1
        assert agreed, state["history"]
        screenshot(driver, "3-contract-finished")

        # the ledger explorer: find round 2's merge by type and round, and verify the chain
        # (a replaced leader's late answer would be a rejected `merged` of the same round)
        merged = [b for b in swarm.tx_blocks() if b["tx"]["type"] == "merged"
                  and b["tx"]["round"] == 2]  # fmt: skip
        assert [b["outcome"]["status"] for b in merged].count("applied") == 1
        driver.get(f"{url}ledger")
        driver.find_element(By.ID, "filter-type").send_keys("merged")
        driver.find_element(By.ID, "filter-round").send_keys("2")
        driver.find_element(By.ID, "search").click()
        found = [str(b["height"]) for b in reversed(merged)]  # newest first
        wait.until(lambda d: d.execute_script(ATTRS, "tr.block-row", "data-height") == found)
        _click(driver, "tr.block-row:last-child")
        wait.until(lambda d: merged[0]["hash"] in _text(d, "#block-detail"))
        _click(driver, "#verify")
        wait.until(lambda d: (_text(d, "#verify-result") or "").startswith("verified"))
        screenshot(driver, "4-ledger")

        # a second run on the same ledger, under another contract, with a smaller step
        swarm.start_all(EPOCHS="2", MIN_PEERS="3", LR="0.02", OPENSWARM_CONTRACT=SECOND)
        swarm.wait()
        driver.get(f"{url}experiments")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.run-row")) == 2)
        for contract, title in ((DEFAULT_CONTRACT, "lr 0.2"), (SECOND, "lr 0.02")):
            driver.execute_script(PICK, contract)
            driver.find_element(By.ID, "save-title").send_keys(title)
            driver.find_element(By.ID, "save-note").send_keys(f"digits, {title}")
            _click(driver, "#save")
            wait.until(lambda d: (_text(d, "#save-message") or "").startswith("saved"))
            wait.until(lambda d, t=title: t in _texts(d, "tr.saved-row td.title"))
        _click(driver, "tr.saved-row input.compare")
        _click(driver, "#compare-btn")
        wait.until(lambda d: d.find_elements(By.ID, "compare-table"))
        header = _texts(driver, "#compare-table thead th")
        assert header[1:] == ["lr 0.2", "lr 0.02"]
        assert len(_texts(driver, "#compare-metric polyline")) == 2
        assert len(_texts(driver, "#compare-table tr.cmp-rounds")) == 1
        screenshot(driver, "5-experiments")

    # the saved experiments are the ledger's runs, with their titles and notes
    import json

    saved = json.loads(experiments.read_text())["experiments"]
    assert [(e["title"], e["record"]["contract"]) for e in saved] == [
        ("lr 0.2", DEFAULT_CONTRACT), ("lr 0.02", SECOND)
    ]  # fmt: skip
    assert saved[1]["note"] == "digits, lr 0.02"
    assert saved[0]["record"]["rounds"] == state["merged_rounds"]

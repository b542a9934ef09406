"""Test helpers for the dashboard: `openswarm ui` as a real process, and the system's
Chromium driven by Selenium (no browser download), with screenshots kept as artifacts."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Where screenshots go ($OPENSWARM_TEST_ARTIFACTS, else test-artifacts/ in the checkout).
ARTIFACTS = Path(os.environ.get("OPENSWARM_TEST_ARTIFACTS") or REPO / "test-artifacts")
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver",)


class UiProcess:
    """A running `openswarm ui`: its process and the lines it printed after the URL."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        # drained all along, so that a chatty dashboard never blocks on a full pipe
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def next_line(self, timeout_s: float = 30) -> str:
        """The next line it printed (fails the test if none comes in time)."""
        try:
            return self.lines.get(timeout=timeout_s)
        except queue.Empty:
            pytest.fail(f"openswarm ui printed nothing more in {timeout_s} s")


@contextmanager
def ui_process(*args: str) -> Iterator[tuple[UiProcess, str]]:
    """`openswarm ui ARGS…` in its own process; yields it and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "openswarm.cli.main", "ui", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first.startswith("dashboard at "):
            proc.wait(timeout=30)
            pytest.fail(f"openswarm ui did not start: {first}{proc.stdout.read()}")
        yield UiProcess(proc), first.split("dashboard at ", 1)[1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _first(paths: tuple[str, ...], what: str, package: str) -> str:
    for path in paths:
        if Path(path).exists():
            return path
    found = shutil.which(Path(paths[0]).name)
    if found:
        return found
    pytest.fail(f"{what} is not installed: apt-get install {package} (.ci/run does)")


@contextmanager
def chromium(profile: Path) -> Iterator[object]:
    """A headless Chromium of the system, its profile in `profile` (one per test run)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = _first(CHROMIUM, "Chromium", "chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1600",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--disable-background-networking",
    ):
        options.add_argument(flag)
    service = Service(_first(CHROMEDRIVER, "chromedriver", "chromium-driver"), port=0)
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: object, name: str) -> Path:
    """Save the page as ARTIFACTS/dashboard/NAME.png."""
    folder = ARTIFACTS / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))  # type: ignore[attr-defined]
    return path

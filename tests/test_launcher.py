"""The local launcher: real peer processes around a real ledger process."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from openswarm import DEFAULT_CONTRACT
from openswarm.cli.run import register
from openswarm.launch import (
    LaunchError,
    ProgressPrinter,
    build_progress,
    format_summary,
    resolve_data_dirs,
    run_swarm,
)

PEER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    names = [k for k in os.environ if k.startswith("OPENSWARM_")
             or k in ("DATA_DIR", "SCRATCH_DIR", "MODEL_DIR", "MAX_EPOCHS", "MIN_PEERS",
                      "NODE_ID", "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")]
    env = {k: os.environ[k] for k in names}
    env["cwd"] = os.getcwd()
    rank = int(os.environ["OPENSWARM_RANK"])
    pid_dir = os.environ.get("PID_DIR")
    if pid_dir:
        with open(os.path.join(pid_dir, f"{rank}.pid"), "w") as f:
            f.write(str(os.getpid()))
    time.sleep(float(os.environ.get("SLEEP_S", "0.2")))
    if os.environ.get("FAIL_RANK") == str(rank):
        sys.exit(3)
    with open(os.environ["OPENSWARM_RESULT"], "w") as f:
        json.dump({"env": env, "args": sys.argv[1:], "final_digest": "d" * 64}, f)
    """
)

LAUNCHER_CLI = textwrap.dedent(
    """
    import typer
    from openswarm.cli.run import register
    app = typer.Typer()
    @app.callback()
    def main() -> None:
        pass
    register(app)
    app()
    """
)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "peer.py"
    path.write_text(PEER_SCRIPT)
    return path


def _cli_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    register(app)
    return app


def test_data_dirs_zero_one_or_one_per_peer(tmp_path: Path) -> None:
    a, b, c = (tmp_path / n for n in "abc")
    for d in (a, b, c):
        d.mkdir()
    assert resolve_data_dirs([], 3) == [None, None, None]
    assert resolve_data_dirs([a], 3) == [a, a, a]
    assert resolve_data_dirs([a, b, c], 3) == [a, b, c]
    with pytest.raises(LaunchError, match="given 2 times for 3 peers"):
        resolve_data_dirs([a, b], 3)
    with pytest.raises(LaunchError, match="does not exist"):
        resolve_data_dirs([tmp_path / "missing"], 3)
    with pytest.raises(LaunchError, match="at least 1"):
        resolve_data_dirs([], 0)


def test_bad_input_is_refused_without_traceback(tmp_path: Path, script: Path) -> None:
    runner = CliRunner()
    app = _cli_app()
    d = tmp_path / "d"
    d.mkdir()
    cases = [
        (["run", str(tmp_path / "nope.py"), "--peers", "2"], "not found"),
        (["run", str(script), "--peers", "0"], "at least 1"),
        (["run", str(script), "--peers", "3", "--data-dir", str(d), "--data-dir", str(d)],
         "--data-dir given 2 times for 3 peers"),
        (["run", str(script), "--peers", "2", "--min-peers", "3"], "--min-peers"),
    ]  # fmt: skip
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert "Traceback" not in result.output
        assert not isinstance(result.exception, LaunchError)


def test_peers_run_with_their_own_env(tmp_path: Path, script: Path) -> None:
    dirs = [tmp_path / f"shard-{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    seen = []
    result = run_swarm(
        script, 3, data_dirs=dirs, script_args=["--lr", "0.1"], workdir=tmp_path / "run",
        epochs=4, on_progress=seen.append, poll_s=0.2, threads_per_peer=2,
    )  # fmt: skip
    assert result.ok, format_summary(result)
    assert result.exit_codes == {"site-1": 0, "site-2": 0, "site-3": 0}
    assert seen and [p.name for p in seen[-1].peers] == ["site-1", "site-2", "site-3"]
    assert all(p.state == "done" for p in seen[-1].peers)
    endpoints = set()
    for rank, peer in enumerate(result.peers):
        assert peer.result is not None and peer.log_path.exists()
        env = peer.result["env"]
        assert peer.result["args"] == ["--lr", "0.1"]
        assert env["OPENSWARM_RANK"] == str(rank)
        assert env["OPENSWARM_PEER_NAME"] == f"site-{rank + 1}"
        assert env["OPENSWARM_PEERS"] == "3"
        assert env["OPENSWARM_DATA_DIR"] == env["DATA_DIR"] == str(dirs[rank])
        assert env["OPENSWARM_MIN_PEERS"] == env["MIN_PEERS"] == "3"
        assert env["OPENSWARM_CONTRACT"] == DEFAULT_CONTRACT
        assert env["OPENSWARM_LISTEN"] == "127.0.0.1:0"
        assert env["MAX_EPOCHS"] == "4"
        # HPE's run environment: its own working directory, NODE_ID, bounded math threads
        assert env["cwd"] == str(tmp_path / "run" / f"site-{rank + 1}")
        assert env["NODE_ID"] == str(rank + 1)
        assert env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "2"
        identity = Path(env["OPENSWARM_IDENTITY"])
        assert identity.is_dir() and identity.name == f"site-{rank + 1}"
        assert any(identity.iterdir())
        assert Path(env["SCRATCH_DIR"]).is_dir() and Path(env["MODEL_DIR"]).is_dir()
        assert Path(env["SCRATCH_DIR"]) != Path(env["MODEL_DIR"])
        endpoints.add(env["OPENSWARM_LEDGER"])
        assert peer.final_digest == "d" * 64
    assert len(endpoints) == 1 and endpoints.pop().startswith("127.0.0.1:")
    assert result.ledger_dir == tmp_path / "run" / "ledger"
    assert "every peer holds the same final model" in format_summary(result)
    with pytest.raises(LaunchError, match="already holds a run"):
        run_swarm(script, 3, workdir=tmp_path / "run")


def test_threads_default_to_a_share_of_the_cores(tmp_path: Path, script: Path) -> None:
    from openswarm.launch.launcher import peer_specs
    from openswarm.ledger.local import LocalLedger

    ledger = LocalLedger.create(tmp_path / "ledger", peers=["site-1", "site-2"])
    share = str(max(1, (os.cpu_count() or 1) // 2))
    saved = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        specs = peer_specs(ledger, tmp_path, [None, None], contract="c", min_peers=2, epochs=None)
        assert {s.env["OMP_NUM_THREADS"] for s in specs} == {share}
        os.environ["OMP_NUM_THREADS"] = "7"  # the user's own setting wins
        specs = peer_specs(ledger, tmp_path, [None, None], contract="c", min_peers=2, epochs=None)
        assert {s.env["OMP_NUM_THREADS"] for s in specs} == {"7"}
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)
        if saved is not None:
            os.environ["OMP_NUM_THREADS"] = saved
    assert [s.workdir for s in specs] == [tmp_path / "site-1", tmp_path / "site-2"]
    with pytest.raises(LaunchError, match="threads-per-peer"):
        run_swarm(script, 2, workdir=tmp_path / "bad", threads_per_peer=0)


def test_a_failing_peer_fails_the_run(
    tmp_path: Path, script: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL_RANK", "1")
    monkeypatch.setenv("SLEEP_S", "0")
    result = run_swarm(script, 2, min_peers=1, workdir=tmp_path / "run", poll_s=0.2)
    assert not result.ok
    assert result.exit_codes == {"site-1": 0, "site-2": 3}
    assert result.peers[0].final_digest == "d" * 64
    assert result.peers[1].final_digest is None and result.peers[1].result is None


def test_peers_left_below_min_peers_are_stopped(tmp_path: Path) -> None:
    script = tmp_path / "peer.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.environ['OPENSWARM_RANK'] == '0':\n"
        "    sys.exit(5)\n"
        "time.sleep(120)\n"
    )
    started = time.monotonic()
    result = run_swarm(script, 3, workdir=tmp_path / "run", poll_s=0.2, stop_grace_s=2)
    assert time.monotonic() - started < 60
    assert not result.ok
    assert result.exit_codes["site-1"] == 5
    assert result.exit_codes["site-2"] == -signal.SIGTERM
    assert result.error and "min_peers=3" in result.error


def test_cli_exit_code_reports_a_failing_peer(tmp_path: Path, script: Path) -> None:
    cli = tmp_path / "cli.py"
    cli.write_text(LAUNCHER_CLI)
    env = {**os.environ, "FAIL_RANK": "0", "SLEEP_S": "0"}
    done = subprocess.run(
        [sys.executable, str(cli), "run", str(script), "--peers", "2", "--min-peers", "1",
         "--workdir", str(tmp_path / "run"), "--", "--epochs", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "site-1 exited with 3" in done.stderr
    assert "Traceback" not in done.stderr
    second = json.loads((tmp_path / "run" / "site-2" / "result.json").read_text())
    assert second["args"] == ["--epochs", "1"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _ledger_pids(config: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(config).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_every_peer_and_the_ledger(
    tmp_path: Path, script: Path, sig: signal.Signals
) -> None:
    cli = tmp_path / "cli.py"
    cli.write_text(LAUNCHER_CLI)
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    run_dir = tmp_path / "run"
    env = {**os.environ, "PID_DIR": str(pid_dir), "SLEEP_S": "300"}
    launcher = subprocess.Popen(
        [sys.executable, str(cli), "run", str(script), "--peers", "3",
         "--workdir", str(run_dir)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(pid_dir.glob("*.pid"))) < 3:
            assert launcher.poll() is None, launcher.communicate()
            assert time.monotonic() < deadline, "peers did not start"
            time.sleep(0.1)
        peer_pids = [int(p.read_text()) for p in pid_dir.glob("*.pid")]
        ledger_pids = _ledger_pids(run_dir / "ledger" / "ledger-1.yaml")
        assert len(ledger_pids) == 1
        assert all(_alive(p) for p in peer_pids + ledger_pids)
        launcher.send_signal(sig)
        out, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 130, out + err
    assert f"logs in {run_dir}" in err
    assert "Traceback" not in err
    for pid in peer_pids + ledger_pids:
        assert not _alive(pid), f"process {pid} outlived the launcher"


def test_progress_lines_from_the_contract_state() -> None:
    state = {
        "round": 3,
        "merged_rounds": 2,
        "members": {"site-1": {"finished": False, "active": True},
                    "site-2": {"finished": True, "active": True}},
        "history": [{"round": 1, "digest": "a", "participants": ["site-1", "site-2"]},
                    {"round": 2, "digest": "b", "participants": ["site-1"]}],
        "metrics": {"2": {"site-1": {"loss": 0.5, "metric": 0.75, "epoch": 2,
                                     "total_epochs": 5}}},
    }  # fmt: skip
    codes = {"site-1": None, "site-2": None, "site-3": None, "site-4": 2}
    progress = build_progress(state, codes, 4.0)
    one, two, three, four = progress.peers
    assert (one.state, one.round, one.epoch, one.total_epochs) == ("training", 2, 2, 5)
    assert (one.loss, one.metric) == (0.5, 0.75)
    assert (two.state, two.round, two.loss) == ("finished", 1, None)
    assert (three.state, three.round) == ("starting", None)
    assert four.state == "exited(2)"
    assert progress.merged == 2 and progress.round == 3
    assert "epoch     2/5" in one.line() and "0.7500" in one.line()

    plain = io.StringIO()
    printer = ProgressPrinter(plain, tty=False)
    printer(progress)
    printer(build_progress(state, codes, 5.0))
    assert len(plain.getvalue().splitlines()) == 4  # nothing changed: nothing printed
    printer(build_progress(state, {**codes, "site-1": 0}, 6.0))
    assert (
        plain.getvalue()
        .splitlines()[-1]
        .endswith("site-1     done         round    2  epoch     2/5  loss  0.5000  metric  0.7500")
    )

    tty = io.StringIO()
    printer = ProgressPrinter(tty, tty=True)
    printer(progress)
    printer(progress)
    assert "\x1b[5F" in tty.getvalue()  # the block of header + 4 lines redrawn in place


def test_a_kept_ledger_is_handed_over_only_when_the_run_ended(tmp_path: Path, script: Path) -> None:
    """`keep_ledger`: a finished run hands its still serving ledger to the caller; a run
    whose `on_ledger` failed (a dashboard that could not start) leaves no ledger behind."""
    seen = []

    def refuse(ledger) -> None:
        seen.append(ledger)
        raise LaunchError("the dashboard did not start")

    with pytest.raises(LaunchError, match="dashboard did not start"):
        run_swarm(script, 1, workdir=tmp_path / "refused", on_ledger=refuse, keep_ledger=True)
    assert len(seen) == 1 and not seen[0].replicas[0].running

    result = run_swarm(script, 1, workdir=tmp_path / "kept", on_ledger=seen.append,
                       keep_ledger=True)  # fmt: skip
    try:
        assert result.ok and result.ledger is seen[1] and result.ledger.replicas[0].running
        with result.ledger.client("admin") as client:
            assert client.status()["height"] > 0
    finally:
        if result.ledger is not None:
            result.ledger.close()
    assert not seen[1].replicas[0].running

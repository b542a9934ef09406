"""The demo's claim under DP-SGD: three sites at ε = 8 per record still beat each site alone
on the skewed MNIST shares (real processes, one ledger; a short run), here with secure
aggregation on as well (the merger sees only the sum of the noised models' updates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from openswarm.demo.run_demo import DemoTraining, run_demo

pytestmark = pytest.mark.slow


def test_a_dp_sgd_swarm_at_epsilon_8_beats_each_site_alone(tmp_path: Path) -> None:
    lines: list[str] = []
    training = DemoTraining(dp_epsilon=8.0, secure_aggregation=True)
    report = run_demo(epochs=2, workdir=tmp_path / "demo", echo=lines.append,
                      show_progress=False, training=training)  # fmt: skip
    assert len({p.final_digest for p in report.peers}) == 1, lines
    best_alone = max(p.local_accuracy for p in report.peers)
    for p in report.peers:
        assert p.swarm_accuracy is not None and p.swarm_accuracy > best_alone, lines
        assert p.epsilon is not None and 7.9 < p.epsilon <= 8.0, lines
    assert "DP-SGD ε=8 per record (δ=1e-5), secure aggregation" in "\n".join(lines)

"""The demo's picture: each site's test accuracy over the rounds, as the ledger recorded it,
beside the local-only and centralized baselines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from openswarm.ledger.store import read_chain
from openswarm.ledger.verify import chain_dirs
from openswarm.ui.chain import ChainIndex


def accuracy_series(ledger_dir: Path, contract: str) -> dict[str, dict[str, list[Any]]]:
    """Per site: the rounds and the metric (accuracy) it reported, read from the stored
    chain of the run's ledger."""
    dirs = chain_dirs(ledger_dir)
    if not dirs:
        return {}
    index = ChainIndex()
    index.add(read_chain(dirs[0]))
    run = index.runs.get(contract)
    return run.series() if run else {}


def plot_accuracy(
    series: Mapping[str, Mapping[str, Sequence[Any]]],
    path: Path,
    *,
    local: Mapping[str, float] | None = None,
    centralized: float | None = None,
) -> Path:
    """Write a PNG of per-site accuracy over rounds (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=110)
    try:
        for i, (site, line) in enumerate(sorted(series.items())):
            points = [(r, m) for r, m in zip(line["round"], line["metric"], strict=True)
                      if m is not None]  # fmt: skip
            color = f"C{i}"
            axes.plot([r for r, _ in points], [100 * m for _, m in points], color=color,
                      linewidth=2, label=f"{site}, swarm")  # fmt: skip
            if local and site in local:
                axes.axhline(100 * local[site], color=color, linestyle=":", linewidth=1.2,
                             label=f"{site}, local only")  # fmt: skip
        if centralized is not None:
            axes.axhline(100 * centralized, color="black", linestyle="--", linewidth=1.2,
                         label="centralized (all data pooled)")  # fmt: skip
        curves = [list(line["metric"]) for line in series.values()]
        if len(curves) > 1 and all(c == curves[0] for c in curves):
            axes.text(0.01, 0.02, "every site evaluates the same merged model: the lines coincide",
                      transform=axes.transAxes, fontsize=8, color="dimgray")  # fmt: skip
        axes.set_xlabel("round")
        axes.set_ylabel("test accuracy (%)")
        axes.set_title("Each site's test accuracy over the swarm's rounds")
        axes.set_ylim(0, 100)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="lower right")
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, format="png")
    finally:
        pyplot.close(figure)
    return path

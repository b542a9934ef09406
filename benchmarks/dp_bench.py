"""The demo under differential privacy: swarm accuracy at ε ∈ {1, 4, 8} and without DP.

Usage (from the repository root):

    python benchmarks/dp_bench.py [--epsilons 1 4 8] [--modes sgd site] [--seed 0] [--json F]

Each row runs the whole demo (`openswarm.demo.run_demo`: three sites with skewed MNIST
shards, the same model, 10 epochs, a merge every 10 batches, the same split and seed);
the DP rows give every site the same ε budget at δ = 1e-5, with the noise calibrated to
spend it over the planned run. "sgd" is DP-SGD (Opacus; ε per record), "site" noises each
site's clipped update before it leaves (ε per site's whole data set). Printed: a markdown
table of the swarm's accuracy, the mean accuracy of each site alone (no DP), the noise
multiplier and the ε each site spent (the largest over the sites).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from openswarm.demo.run_demo import DemoTraining, run_demo


def one_run(root: Path, mode: str | None, epsilon: float | None, seed: int) -> dict[str, Any]:
    training = DemoTraining(seed=seed, dp_epsilon=epsilon, dp_mode=mode or "sgd")
    report = run_demo(workdir=root, echo=lambda _: None, show_progress=False,
                      training=training)  # fmt: skip
    records = [json.loads((root / "swarm" / p.name / "result.json").read_text())
               for p in report.peers]  # fmt: skip
    privacy = [r.get("privacy") or {} for r in records]
    swarm = [p.swarm_accuracy for p in report.peers if p.swarm_accuracy is not None]
    return {
        "mode": mode or "none",
        "epsilon": epsilon,
        "swarm_accuracy": sum(swarm) / len(swarm),
        "alone_accuracy": sum(p.local_accuracy for p in report.peers) / len(report.peers),
        "noise": [x.get("noise_multiplier") for x in privacy],
        "spent": max((x.get("epsilon") or 0.0) for x in privacy),
        "rounds": report.rounds,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| DP mode | ε budget (δ=1e-5) | swarm accuracy | mean site alone | noise multiplier "
        "| ε spent (max) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        noise = [z for z in r["noise"] if z is not None]
        shown = "-" if not noise else " to ".join(sorted({f"{z:.2f}" for z in noise}))
        budget = "-" if r["epsilon"] is None else f"{r['epsilon']:g}"
        spent = "-" if r["epsilon"] is None else f"{r['spent']:.2f}"
        lines.append(
            f"| {r['mode']} | {budget} | {100 * r['swarm_accuracy']:.1f} % "
            f"| {100 * r['alone_accuracy']:.1f} % | {shown} | {spent} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    parser.add_argument("--modes", nargs="+", default=["sgd", "site"], choices=["sgd", "site"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(one_run(Path(tmp) / "none", None, None, args.seed))
        print(table(rows), flush=True)
        for mode in args.modes:
            for epsilon in args.epsilons:
                rows.append(one_run(Path(tmp) / f"{mode}-{epsilon:g}", mode, epsilon, args.seed))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print("\n" + table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

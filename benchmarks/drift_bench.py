"""The demo under each drift remedy: swarm accuracy against centralized training.

Usage (from the repository root):

    python benchmarks/drift_bench.py [--seeds 0 1 2] [--options plain fedadam …] [--json F]

Each option runs the whole demo (`openswarm.demo.run_demo`: three sites with skewed MNIST
shards, the same model, 10 epochs and a merge every 10 batches) once per seed; the seed
moves the data split, the initial weights and the shuffling, and the baselines (each site
alone, all data pooled) are trained on the same seed. Printed per option: the swarm's
accuracy (mean and spread over the seeds), its gap to centralized training (mean of the
per-seed gaps), rounds, swarm seconds, and the models all sites received (MB), whose
difference to `plain` is what the option adds to the traffic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from openswarm.demo.run_demo import DemoTraining, run_demo

SITES = 3

#: name -> (merge method, merge options, proximal_mu, control_variates)
OPTIONS: dict[str, tuple[str, dict[str, float], float, bool]] = {
    "plain": ("mean", {}, 0.0, False),
    "fedavgm": ("fedavgm", {}, 0.0, False),
    "fedadam": ("fedadam", {}, 0.0, False),
    "fedyogi": ("fedyogi", {}, 0.0, False),
    "fedadagrad": ("fedadagrad", {}, 0.0, False),
    "fedprox": ("mean", {}, 0.01, False),
    "scaffold": ("mean", {}, 0.0, True),
    "scaffold+fedavgm": ("fedavgm", {}, 0.0, True),
}


def run_one(name: str, seed: int, workdir: Path) -> dict[str, Any]:
    merge, options, mu, variates = OPTIONS[name]
    training = DemoTraining(merge=merge, merge_options=options, proximal_mu=mu,
                            control_variates=variates, seed=seed)  # fmt: skip
    report = run_demo(workdir=workdir / f"{name}-{seed}", training=training,
                      echo=lambda _line: None, show_progress=False)  # fmt: skip
    swarm = [p.swarm_accuracy for p in report.peers if p.swarm_accuracy is not None]
    return {
        "option": name,
        "seed": seed,
        "swarm": statistics.fmean(swarm),
        "central": report.centralized_accuracy,
        "local": statistics.fmean(p.local_accuracy for p in report.peers),
        "rounds": report.rounds,
        "seconds": report.seconds,
        "received_mb": report.received_mb,
        "identical": len({p.final_digest for p in report.peers}) == 1,
    }


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["option"] for r in runs):
        mine = [r for r in runs if r["option"] == name]
        swarm = [r["swarm"] for r in mine]
        rows.append({
            "option": name,
            "seeds": len(mine),
            "swarm": statistics.fmean(swarm),
            "spread": max(swarm) - min(swarm),
            "gap": statistics.fmean(r["central"] - r["swarm"] for r in mine),
            "central": statistics.fmean(r["central"] for r in mine),
            "local": statistics.fmean(r["local"] for r in mine),
            "rounds": statistics.fmean(r["rounds"] for r in mine),
            "seconds": statistics.fmean(r["seconds"] for r in mine),
            "received_mb": statistics.fmean(r["received_mb"] or 0.0 for r in mine),
            "identical": all(r["identical"] for r in mine),
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| option | swarm accuracy (mean, ± half the min-max spread) | gap to centralized | "
        "rounds | swarm s | MB received a round, per site |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_round = r["received_mb"] / max(r["rounds"], 1) / SITES
        lines.append(
            f"| {r['option']} | {100 * r['swarm']:.1f} % (±{50 * r['spread']:.1f}) | "
            f"{100 * r['gap']:.1f} pt | {r['rounds']:.0f} | {r['seconds']:.0f} | "
            f"{per_round:.2f} |"
        )
    if rows:
        lines.append(
            f"\ncentralized: {100 * rows[0]['central']:.1f} %, each site alone: "
            f"{100 * rows[0]['local']:.1f} % (means over the seeds)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    parser.add_argument(
        "--table", type=Path, nargs="+", help="only print the table of earlier --json files"
    )
    args = parser.parse_args()
    if args.table:
        runs = [r for f in args.table for r in json.loads(f.read_text())["runs"]]
        print(table(summarize(runs)))
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="openswarm-drift-") as folder:
        for name in args.options:
            for seed in args.seeds:
                run = run_one(name, seed, Path(folder))
                runs.append(run)
                print(f"{name} seed {seed}: swarm {100 * run['swarm']:.1f} %, centralized "
                      f"{100 * run['central']:.1f} %, {run['rounds']} rounds, "
                      f"{run['seconds']:.0f} s", flush=True)  # fmt: skip
    rows = summarize(runs)
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"runs": runs, "summary": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Merge benchmark: seconds and GB/s per method over peer counts K and parameter counts P.

GB/s counts the bytes the merge must read, K * P * 4 (float32). Beside ``mean`` the table
gives its speed relative to a memory-bandwidth baseline measured in the same run: numpy
summing the same K arrays into a preallocated output (``np.add(a0, a1, out=o)``, then
``np.add(o, ai, out=o)``), and the same into a new output (``baseline_new``: a merge must
return new arrays, and first-touch page faults cost ~P*4 bytes of memset). ``mean_out``
and ``mean_weighted_out`` merge into outputs kept between calls (``mean(..., out=...)``),
as the baseline does: the like-for-like comparison the target is judged on. Mean and
baselines are timed interleaved, best of several runs; robust methods run once each.
Inputs are Gaussian noise (sigma 0.01) around a common point, in three tensors summing
to P; ``mean_weighted`` uses random weights, the other methods equal weights.

    python benchmarks/merge_bench.py               # K in 2,4,8,16; P in 1M,10M,50M
    python benchmarks/merge_bench.py --quick       # K in 2,8; P in 1M,10M
    python benchmarks/merge_bench.py --sizes 10M --peers 4,16 --methods mean,krum
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import numpy as np

from openswarm.merge import MERGE_METHODS, geomedian_with_info, mean

Params = dict[str, np.ndarray]
METHODS = ["mean", "mean_weighted", *[m for m in MERGE_METHODS if m != "mean"]]
OPTIONS = {"trimmed_mean": {"beta": 0.25}}


def parse_count(text: str) -> int:
    """'10M' -> 10_000_000; also K and G suffixes."""
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:].upper(), 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def make_sets(count: int, size: int, sigma: float, seed: int = 0) -> list[Params]:
    """``count`` parameter sets: a common point plus independent-looking noise each."""
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal(size, dtype=np.float32)
    stride = 1009
    noise = rng.standard_normal(size + count * stride, dtype=np.float32)
    noise *= np.float32(sigma)
    bounds = [0, size // 2, size // 2 + size // 4, size]
    sets = []
    for i in range(count):
        peer = centre + noise[i * stride : i * stride + size]
        sets.append({f"t{j}": peer[bounds[j] : bounds[j + 1]] for j in range(3)})
    return sets


def best_times(funcs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Fastest of ``repeat`` runs of each function, runs interleaved (fairer on a busy host)."""
    best = dict.fromkeys(funcs, float("inf"))
    for _ in range(repeat):
        for name, func in funcs.items():
            gc.collect()
            start = time.perf_counter()
            result = func()
            best[name] = min(best[name], time.perf_counter() - start)
            del result
    return best


def baseline(sets: list[Params], outputs: Params) -> None:
    """Sum the K arrays of every tensor into preallocated outputs with numpy."""
    for name, out in outputs.items():
        np.add(sets[0][name], sets[1][name], out=out)
        for params in sets[2:]:
            np.add(out, params[name], out=out)


def baseline_fresh(sets: list[Params]) -> Params:
    """The baseline with newly allocated outputs, as a merge must return (page faults)."""
    outputs = {}
    for name in sets[0]:
        out = outputs[name] = np.add(sets[0][name], sets[1][name])
        for params in sets[2:]:
            np.add(out, params[name], out=out)
    return outputs


def run_method(name: str, sets: list[Params], weights: np.ndarray) -> object:
    """One merge call, as the table names it."""
    if name == "mean_weighted":
        return mean(sets, weights)
    if name == "geomedian":
        return geomedian_with_info(sets)
    return MERGE_METHODS[name](sets, **OPTIONS.get(name, {}))


def bench(args: argparse.Namespace) -> None:
    """Print the table."""
    print(f"{'K':>3} {'P':>6}  {'method':<18}{'seconds':>9}{'GB/s':>8}  note")
    ratios = []
    for size in args.sizes:
        all_sets = make_sets(max(args.peers), size, sigma=0.01)
        repeat = args.repeat or (7 if size <= 10**7 else 3)
        for count in args.peers:
            sets = all_sets[:count]
            weights = np.random.default_rng(count).uniform(0.5, 1.5, count)
            gbytes = count * size * 4 / 1e9
            label = f"{count:>3} {size / 1e6:>5g}M"

            def row(
                method: str, seconds: float, note: str, label: str = label, gb: float = gbytes
            ) -> None:
                print(f"{label}  {method:<18}{seconds:>9.4f}{gb / seconds:>8.2f}  {note}")

            outputs = {n: np.empty_like(v) for n, v in sets[0].items()}
            fast = {
                "baseline": lambda s=sets, o=outputs: baseline(s, o),
                "baseline_new": lambda s=sets: baseline_fresh(s),
            }
            reused = {n: np.zeros_like(v) for n, v in sets[0].items()}
            for method in ("mean", "mean_weighted"):
                if method in args.methods:
                    fast[method] = lambda m=method, s=sets, w=weights: run_method(m, s, w)
                    # the same merge into outputs kept from round to round, like the baseline
                    w_or_none = weights if method == "mean_weighted" else None
                    fast[f"{method}_out"] = lambda s=sets, w=w_or_none, o=reused: mean(s, w, out=o)
            times = best_times(fast, repeat)
            del outputs, reused
            base_s = times["baseline"]
            row("baseline", base_s, "numpy add, preallocated output")
            row("baseline_new", times["baseline_new"], "numpy add, new output")
            for method in ("mean", "mean_weighted"):
                if method in times:
                    ratio = base_s / times[method]
                    fresh = times["baseline_new"] / times[method]
                    row(method, times[method], f"{ratio:.2f}x baseline ({fresh:.2f}x baseline_new)")
                    kept = base_s / times[f"{method}_out"]
                    row(f"{method}_out", times[f"{method}_out"], f"{kept:.2f}x baseline (out=)")
                    ratios.append((method, count, size, ratio, kept))
            for method in args.methods:
                if method.startswith("mean"):
                    continue
                if method in ("krum", "multi_krum") and count < 3:
                    print(f"{label}  {method:<18}{'':>17}  skipped: needs K >= 3")
                    continue
                if args.max_slow and count * size > args.max_slow:
                    print(f"{label}  {method:<18}{'':>17}  skipped: K*P > --max-slow")
                    continue
                start = time.perf_counter()
                result = run_method(method, sets, weights)
                seconds = time.perf_counter() - start
                note = ""
                if method == "geomedian":
                    note = f"{result.iterations} iterations, converged={result.converged}"
                del result
                row(method, seconds, note)
        del all_sets
    target = [r for r in ratios if r[2] == 10**7]
    if target:
        print("\ntarget: weighted mean >= 0.70x the preallocated baseline at P = 10M")
        for method, count, _, fresh, kept in target:
            verdict = "PASS" if kept >= 0.7 else "FAIL"
            print(f"  {method:<14} K={count:<3} new output {fresh:.2f}x, out= {kept:.2f}x: "
                  f"{verdict}")  # fmt: skip


def iterations(args: argparse.Namespace) -> None:
    """Geomedian iteration counts on Gaussian inputs at several noise levels."""
    size = 10**6
    print(f"\ngeomedian iterations (tol 1e-6, P={size:g}; noise sigma around a N(0,1) point)")
    print(f"{'K':>3}  " + "".join(f"{f'sigma={s:g}':>12}" for s in (0.01, 0.1, 1.0, 10.0)))
    for count in args.peers:
        cells = []
        for sigma in (0.01, 0.1, 1.0, 10.0):
            info = geomedian_with_info(make_sets(count, size, sigma, seed=count))
            cells.append(f"{info.iterations}{'' if info.converged else '*'}")
        print(f"{count:>3}  " + "".join(f"{c:>12}" for c in cells))
    print("(* = stopped at max_iter without converging)")


def main() -> None:
    """Parse flags and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K in 2,8 and P in 1M,10M")
    parser.add_argument("--sizes", help="comma-separated P values, e.g. 1M,10M,50M")
    parser.add_argument("--peers", help="comma-separated K values, e.g. 2,4,8,16")
    parser.add_argument("--methods", help=f"comma-separated, from {','.join(METHODS)}")
    parser.add_argument("--repeat", type=int, help="runs per timing (best counts)")
    parser.add_argument(
        "--max-slow", type=parse_count, help="skip robust methods when K*P exceeds this"
    )
    args = parser.parse_args()
    sizes = args.sizes or ("1M,10M" if args.quick else "1M,10M,50M")
    peers = args.peers or ("2,8" if args.quick else "2,4,8,16")
    args.sizes = [parse_count(s) for s in sizes.split(",")]
    args.peers = [int(k) for k in peers.split(",")]
    args.methods = args.methods.split(",") if args.methods else METHODS
    unknown = set(args.methods) - set(METHODS)
    if unknown or min(args.peers) < 2:
        parser.error(f"unknown methods {sorted(unknown)} or K < 2")
    bench(args)
    iterations(args)


if __name__ == "__main__":
    main()

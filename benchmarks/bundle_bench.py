"""Program bundles through the ledger nodes: upload (admin → every node) and download
(operator ← a node, every file checked against its digest), against copying the same files
on this disk with their digests computed (the floor for moving and checking the bytes).

Usage (from the repository root):

    python benchmarks/bundle_bench.py [--megabytes 32] [--files 16] [--nodes 1]

Prints seconds and MB/s of each, and their ratios to the local copy. Nodes are embedded
(one) or etcd-backed (several) ledger nodes on loopback.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from openswarm.admin.bundles import bundle_of, fetch_bundle, push_bundle
from openswarm.ledger.local import LocalLedger


def _program(folder: Path, megabytes: int, files: int) -> None:
    folder.mkdir(parents=True)
    size = megabytes * (1 << 20) // files
    for index in range(files):
        (folder / f"part-{index:03d}.bin").write_bytes(os.urandom(size))
    (folder / "train.py").write_text("print('hello')\n")


def _local_copy(source: Path, dest: Path) -> None:
    for path in sorted(source.iterdir()):
        data = path.read_bytes()
        hashlib.sha256(data).hexdigest()
        (dest / path.name).write_bytes(data)
        hashlib.sha256((dest / path.name).read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=32)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bundle-bench-"))
    try:
        program = root / "program"
        _program(program, args.megabytes, args.files)
        bundle = bundle_of(program)
        mb = bundle["size"] / 1e6
        copy = root / "copy"
        copy.mkdir()
        start = time.perf_counter()
        _local_copy(program, copy)
        local_s = time.perf_counter() - start
        with LocalLedger.create(root / "net", replicas=args.nodes, peers=[],
                                extra_identities=[("op", "operator")]) as net:  # fmt: skip
            net.start()
            net.wait_ready()
            with net.client("admin", timeout_s=60) as admin:
                start = time.perf_counter()
                push_bundle(net.endpoints, admin.identity, program, bundle)
                up_s = time.perf_counter() - start
            with net.client("op", timeout_s=60) as operator:
                start = time.perf_counter()
                fetch_bundle(operator, bundle, root / "fetched")
                down_s = time.perf_counter() - start
        print(f"bundle: {mb:.1f} MB in {len(bundle['files'])} files, {args.nodes} ledger node(s)")
        print(f"local copy + digests: {local_s:6.2f} s  {mb / local_s:7.1f} MB/s")
        print(f"upload to every node: {up_s:6.2f} s  {mb * args.nodes / up_s:7.1f} MB/s  "
              f"ratio {up_s / local_s:5.1f}x")  # fmt: skip
        print(f"download, checked:    {down_s:6.2f} s  {mb / down_s:7.1f} MB/s  "
              f"ratio {down_s / local_s:5.1f}x")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

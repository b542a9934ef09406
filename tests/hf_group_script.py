"""A Hugging Face Trainer site that may run as several processes (DDP over gloo), for
tests/test_gpu_sites.py. With RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
set (as torchrun or `accelerate launch` set them) the Trainer trains one replica per
process and the processes take part in the swarm as one site; without them it is an
ordinary one-process site.

Environment: OPENSWARM_* (as the tests set them; the result file gets `.rankN` appended
for rank N > 0), EPOCHS, SYNC_FREQUENCY, MIN_PEERS, and FAIL_EARLY=1 (adaptive sync with
no validation data: rank 0 fails in on_train_begin). The result holds the final digest,
the model's digest, the rounds and whether this process made a swarm peer; or the error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import hf_swarm_script as site
import torch

from openswarm.codec import digest
from openswarm.hf import SwarmCallback


def main() -> int:
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    env = os.environ
    rank = int(env.get("RANK", "0"))
    result_path = env["OPENSWARM_RESULT"] + (f".rank{rank}" if rank else "")
    site_rank, peers = int(env["OPENSWARM_RANK"]), int(env["OPENSWARM_PEERS"])
    data, test = site.shard(site_rank, peers)
    model = site.tiny_bert(site_rank * 10 + rank)  # replicas start apart: DDP aligns them
    fail_early = env.get("FAIL_EARLY") == "1"
    cb = SwarmCallback(
        model, sync_frequency=int(env.get("SYNC_FREQUENCY", "4")),
        min_peers=int(env.get("MIN_PEERS", "2")), val_data=None if fail_early else test,
        use_adaptive_sync=fail_early,
    )  # fmt: skip
    try:
        site.train(model, data, int(env.get("EPOCHS", "2")), site_rank, [cb])
    except Exception as exc:  # reported to the test, which checks which error each rank saw
        record: dict = {"error": f"{type(exc).__name__}: {exc}"}
        code = 1
    else:
        record = {
            "final_digest": cb.final_digest,
            "model_digest": digest({k: v.detach() for k, v in model.state_dict().items()}),
            "rounds": cb.rounds,
            "accuracy": site.accuracy(model, test),
        }
        code = 0
    record |= {"rank": rank, "group": cb.group is not None, "has_peer": cb.peer is not None}
    Path(result_path).write_text(json.dumps(record))
    return code


if __name__ == "__main__":
    sys.exit(main())

"""Hostile or failing sites for the adversarial swarm tests, installed into one site process.

`tests/swarm_script.py` calls `install(os.environ["FAULT"])` before it builds its callback,
so a test picks, per site, what that site does wrong. The site still holds a valid peer
certificate: these are the attacks of a participant, not of an outsider.

- `serve:header65`, `serve:flood`, `serve:silent`: its snapshot server answers the leader
  with a header of 65 dimensions (padded to the size it announced, whose chunk root it
  announced too, so only the decode can catch it), with endless bytes, or with one chunk
  and then silence (after its snapshot's chunk digests). It never leads (so an honest site
  always merges).
- `snoop`: before its first `ready`, it fetches another site's local snapshot, which only
  the round's leader may; what happened goes to the file FAULT_REPORT.
- `bad_merged_once`, `die_after_merged_once`, `huge_merged_once`: the first site (of all that
  carry the fault; the file FAULT_MARKER decides) to lead a round after the first publishes a
  merged model of the wrong shape; or records `merged` and exits at once without handing the
  model over; or records a merged model of 2**62 bytes and answers every fetch of it with
  64 MiB of zeros.
- `vote_early`: it votes every leader of a round it takes part in out at once, before the
  leader timeout (and once with a transaction dated an hour ahead); what the ledger
  answered goes to FAULT_REPORT.
- `silent_die_under:NAME`: it never leads; the first site (FAULT_MARKER decides) to see a
  round of three or more it takes part in sealed with NAME as leader exits on the spot.
- `own_as_merge_once`: the first time it leads a round after the first, it publishes its own
  local snapshot as the merge (round and digest go to FAULT_REPORT).
- `lying_auditor`: as an auditor it recomputes the merge honestly, then attests the
  opposite: another digest for an honest merge, the leader's for a dishonest one (each lie
  is appended to FAULT_REPORT).
- `zero_state_once`: the first time it leads a round whose previous merged model carries a
  server optimizer's state, it merges honestly but publishes that state zeroed (steering
  the optimizer: a reset of its momentum and second moments) (round and digest go to
  FAULT_REPORT).
- `die_before_unmask`: in a masked round (secure aggregation) after the first, once the
  leader has fixed the survivors, it exits before revealing its shares (not as the leader;
  the first site to get there, FAULT_MARKER decides; round and name go to FAULT_REPORT).
- `heavy_far`: it games the weights: first it declares a weight of 1e9 with `ready` (what
  the ledger answered goes to FAULT_REPORT), then offers, every round, its model pushed
  1000 away in random directions at the largest weight allowed (100).
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np

from openswarm.codec import decode, digest_encoded, encode
from openswarm.codec.chunks import chunk_root, leaves
from openswarm.ledger.client import LedgerError
from openswarm.ledger.tx import make_transaction
from openswarm.merge import MergeInputError
from openswarm.node.exchange import CHUNK_BYTES, ExchangeError, ExchangeServer, Snapshot
from openswarm.node.peer import SwarmPeer


def install(fault: str) -> None:
    """Patch this process's peer runtime to behave as `fault` says."""
    if fault.startswith("serve:"):
        _serve_badly(fault.partition(":")[2])
        SwarmPeer._lead = lambda self, view, local: None  # type: ignore[method-assign]
    elif fault == "snoop":
        _snoop_before_first_ready()
    elif fault in ("bad_merged_once", "die_after_merged_once", "huge_merged_once"):
        _lead_badly_once(fault)
    elif fault == "vote_early":
        _after_register(_vote_early)
    elif fault == "own_as_merge_once":
        _publish_own_once()
    elif fault == "lying_auditor":
        _lie_as_auditor()
    elif fault == "heavy_far":
        _game_weights()
    elif fault == "zero_state_once":
        _zero_state_once()
    elif fault == "die_before_unmask":
        _die_before_unmask()
    elif fault.startswith("silent_die_under:"):
        SwarmPeer._lead = lambda self, view, local: None  # type: ignore[method-assign]
        leader = fault.partition(":")[2]
        _after_register(lambda peer: _die_when_led_by(peer, leader))
    else:
        raise ValueError(f"unknown FAULT {fault!r}")


def _header65(size: int) -> bytes:
    """A safetensors encoding of exactly `size` bytes whose one tensor has 65 dimensions."""
    header = {"w": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}
    text = json.dumps(header).encode()
    text += b" " * (size - 8 - 4 - len(text))
    return struct.pack("<Q", len(text)) + text + b"\0" * 4


def _serve_badly(how: str) -> None:
    honest = ExchangeServer._fetch
    if how == "header65":  # announce the root of what it will serve
        submit = SwarmPeer._submit

        def announce(self: SwarmPeer, kind: str, round: int, payload: dict[str, Any]) -> Any:
            if kind == "ready":
                payload = {**payload, "root": chunk_root(_header65(payload["size"]))}
            return submit(self, kind, round, payload)

        SwarmPeer._submit = announce  # type: ignore[method-assign]

    def fetch(self: ExchangeServer, request: bytes, context: grpc.ServicerContext) -> Iterator:
        asked = json.loads(request)
        if asked["kind"] != "local":
            yield from honest(self, request, context)
            return
        found = self.store.find("local", int(asked["round"]), str(asked["digest"]))
        size = len(found.data) if found else 1 << 20
        if how == "header65":
            if asked.get("leaves"):
                yield leaves(_header65(size))
            yield _header65(size)
            return
        if asked.get("leaves") and found is not None:
            yield found.leaves
        if how == "flood":
            while context.is_active():
                yield b"\xff" * CHUNK_BYTES
        elif how == "silent":
            yield b"\0" * 1024
            while context.is_active():
                time.sleep(0.2)

    ExchangeServer._fetch = fetch  # type: ignore[method-assign]


def _flood_merged(peer: SwarmPeer, flooded: int) -> None:
    """From now on this site answers every fetch of round `flooded`'s merged model with
    64 MiB of zeros, far more than any honest site's model (later rounds it leads honestly)."""
    honest = peer.server.store.find
    flood = b"\0" * (64 << 20)

    def find(kind: str, round: int, digest: str) -> Snapshot | None:
        if kind != "merged" or round != flooded:
            return honest(kind, round, digest)
        return Snapshot(kind, round, digest, flood)

    peer.server.store.find = find  # type: ignore[method-assign]


def _snoop_before_first_ready() -> None:
    honest = SwarmPeer.sync

    def sync(self: SwarmPeer, params: Any, **kwargs: Any) -> Any:
        if not getattr(self, "_snooped", False):
            self._snooped = True
            _report(_try_snoop(self))
        return honest(self, params, **kwargs)

    SwarmPeer.sync = sync  # type: ignore[method-assign]


def _try_snoop(peer: SwarmPeer) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = peer.view()
        victims = [n for n in view["current"]["ready"] if n != peer.name]
        if victims:
            victim = victims[0]
            entry = view["current"]["ready"][victim]
            endpoint = view["members"][victim]["endpoint"]
            try:
                data = peer.fetcher.fetch(
                    endpoint, "local", view["round"], entry["digest"],
                    max_bytes=entry["size"], deadline_s=20, idle_s=10,
                )  # fmt: skip
            except ExchangeError as exc:
                return {"victim": victim, "refused": True, "error": str(exc)}
            return {"victim": victim, "refused": False, "bytes": len(data)}
        time.sleep(0.1)
    return {"victim": None, "refused": None, "error": "no other site became ready"}


def _after_register(watcher: Any) -> None:
    """Run `watcher(peer)` on a thread once the peer has registered."""
    honest = SwarmPeer.register

    def register(self: SwarmPeer) -> None:
        honest(self)
        threading.Thread(target=watcher, args=(self,), daemon=True).start()

    SwarmPeer.register = register  # type: ignore[method-assign]


def _sealed_under_other(peer: SwarmPeer) -> tuple[int, str] | None:
    """(round, leader) while a round this peer takes part in is sealed under another."""
    view = peer.view()
    current = view["current"]
    leader = current.get("leader")
    if (
        current["sealed"]
        and leader not in (None, peer.name)
        and (peer.name in current["participants"])
    ):
        return view["round"], leader
    return None


def _vote_early(peer: SwarmPeer) -> None:
    votes: list[dict[str, Any]] = []
    voted: set[tuple[int, str]] = set()
    while not peer._stop.is_set():
        sealed = _sealed_under_other(peer)
        if sealed is not None and sealed not in voted:
            voted.add(sealed)
            r, leader = sealed
            if not votes:  # once: dated an hour ahead, as if the timeout had passed
                tx = make_transaction(peer.identity, "leader_timeout", contract=peer.contract,
                                      round=r, payload={"leader": leader},
                                      timestamp=time.time() + 3600)  # fmt: skip
                try:
                    outcome = peer.ledger.submit_tx(tx)
                    votes.append({"forged": True, "status": outcome.status})
                except LedgerError as exc:
                    votes.append({"forged": True, "status": "refused", "reason": str(exc)})
            outcome = peer._submit("leader_timeout", r, {"leader": leader})
            votes.append({"round": r, "leader": leader, "status": outcome.status,
                          "reason": outcome.reason})  # fmt: skip
            _report({"votes": votes})
        time.sleep(0.01)


def _die_when_led_by(peer: SwarmPeer, leader: str) -> None:
    while not peer._stop.is_set():
        sealed = _sealed_under_other(peer)
        crowded = len(peer.view()["current"]["participants"]) >= 3  # someone else to vote
        if sealed is not None and sealed[1] == leader and crowded and _first_to_misbehave():
            _report({"died": peer.name, "round": sealed[0], "leader": leader})
            os._exit(0)
        if sealed is not None and sealed[1] == leader and crowded:
            return  # another site died already
        time.sleep(0.01)


def _die_before_unmask() -> None:
    from openswarm.node.masked_rounds import MaskedRounds

    honest = MaskedRounds.reveal

    def reveal(self: MaskedRounds, state: dict[str, Any], round: int) -> None:
        leads = state["current"]["leader"] == self.f.name
        if not leads and round >= 2 and _first_to_misbehave():
            _report({"died": self.f.name, "round": round})
            os._exit(0)
        honest(self, state, round)

    MaskedRounds.reveal = reveal  # type: ignore[method-assign]


def _publish_own_once() -> None:
    honest = SwarmPeer._lead

    def lead(self: SwarmPeer, view: dict[str, Any], local: Any) -> None:
        if view["latest_merged"] is None or not _first_to_misbehave():
            honest(self, view, local)
            return
        digest = digest_encoded(local.data)
        self.server.store.publish("merged", local.round, digest, local.data)
        _report({"leader": self.name, "round": local.round, "digest": digest})
        self._submit("merged", local.round, {"digest": digest, "size": len(local.data)})

    SwarmPeer._lead = lead  # type: ignore[method-assign]


def _zero_state_once() -> None:
    from openswarm.merge.server_opt import is_state
    from openswarm.node.leader import Leader, Merged

    honest = Leader._optimized

    def optimized(self: Leader, pulls: Any, mean: Merged) -> Merged:
        merged = honest(self, pulls, mean)
        previous = pulls.view["latest_merged"]
        # a leader, not an auditor (auditors recompute with mirror_from set), after the first
        # merge that carries state
        if pulls.mirror_from is not None or previous is None or previous["round"] < 2:
            return merged
        if not _first_to_misbehave():
            return merged
        params = decode(merged.data)
        for name in params:
            if is_state(name):
                params[name] = np.zeros_like(params[name])
        data = encode(params)
        _report({"leader": self.name, "round": pulls.round, "digest": digest_encoded(data)})
        return Merged(data, digest_encoded(data), merged.used, merged.excluded)

    Leader._optimized = optimized  # type: ignore[method-assign]


def _lie_as_auditor() -> None:
    lies: list[dict[str, Any]] = []

    def audit(self: SwarmPeer, view: dict[str, Any], local: Any) -> None:
        r, audit = local.round, view["current"]["audit"]
        try:
            found = self._leader.recompute(view, r, local.data, self._model_structure(), 2**40)
        except MergeInputError:  # too late: the others decided the audit already
            return
        honest = found.digest == audit["digest"]
        lie = "f" * 64 if honest else audit["digest"]
        lies.append({"round": r, "honest": honest, "attested": lie})
        _report({"lies": lies})
        self._submit("attest", r, {"digest": lie, "size": audit["size"]})

    SwarmPeer._audit = audit  # type: ignore[method-assign]


def _game_weights() -> None:
    honest = SwarmPeer.sync
    noise: dict[str, np.ndarray] = {}

    def sync(self: SwarmPeer, params: Any, *, weight: float | None = None, retry: bool = True):
        if not noise:
            _report({"heavy": _declare_heavy(self)})
        far = {}
        for name, value in params.items():
            array = np.array(value.detach().cpu() if hasattr(value, "detach") else value)
            if name not in noise:
                signs = np.random.default_rng(len(noise)).choice([-1.0, 1.0], array.shape)
                noise[name] = (1000.0 * signs).astype(array.dtype)
            far[name] = array + noise[name]
        return honest(self, far, weight=100, retry=retry)

    SwarmPeer.sync = sync  # type: ignore[method-assign]


def _declare_heavy(peer: SwarmPeer) -> dict[str, Any]:
    """Offer a weight of 1e9 for the open round; the ledger's answer."""
    payload = {"digest": "0" * 64, "size": 1, "weight": 1e9}
    for _ in range(100):  # until it meets an open round (not one sealed a moment ago)
        outcome = peer._submit("ready", peer.view()["round"], payload)
        if outcome.applied or "sealed" not in (outcome.reason or ""):
            break
        time.sleep(0.05)
    return {"status": outcome.status, "reason": outcome.reason}


def _report(outcome: dict[str, Any]) -> None:
    with open(os.environ["FAULT_REPORT"], "w") as handle:
        json.dump(outcome, handle)


def _first_to_misbehave() -> bool:
    """True in exactly one of the processes that ask (the one that creates the marker)."""
    try:
        os.close(os.open(os.environ["FAULT_MARKER"], os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def _lead_badly_once(fault: str) -> None:
    honest = SwarmPeer._lead

    def lead(self: SwarmPeer, view: dict[str, Any], local: Any) -> None:
        if view["latest_merged"] is None or not _first_to_misbehave():
            honest(self, view, local)
            return
        r = local.round
        if fault == "huge_merged_once":
            digest = digest_encoded(local.data)
            _report({"leader": self.name, "round": r, "digest": digest})
            _flood_merged(self, r)
            self._submit("merged", r, {"digest": digest, "size": 2**62})
            return
        if fault == "die_after_merged_once":
            _report({"leader": self.name, "round": r})
            size = len(local.data)
            self._submit("merged", r, {"digest": digest_encoded(local.data), "size": size})
            os._exit(0)  # the model was never served to anyone
        params = decode(local.data)
        name = next(iter(params))
        params[name] = np.ascontiguousarray(params[name][:-1])  # the wrong shape
        data = encode(params)
        digest = digest_encoded(data)
        self.server.store.publish("merged", r, digest, data)
        _report({"leader": self.name, "round": r, "digest": digest})
        self._submit("merged", r, {"digest": digest, "size": len(data)})

    SwarmPeer._lead = lead  # type: ignore[method-assign]

"""The replicated state machine: checks each transaction and applies it, deterministically.

Every replica feeds the same transactions in the same order through `LedgerState.commit`,
which returns the block that records the transaction and its outcome. Nothing here reads a
clock, a file or the network, so all replicas reach the same state and the same chain.
"""

from __future__ import annotations

import datetime as dt
import heapq
import json
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from openswarm.ledger.block import Certificates, genesis_block, make_block, record_of, tx_block
from openswarm.ledger.contract import (
    SETTINGS_KEYS,
    ContractCall,
    ContractError,
    ContractSettings,
    TrainingContract,
)
from openswarm.ledger.genesis import check_genesis, genesis_sites
from openswarm.ledger.operators import OperatorError, OperatorRoster
from openswarm.ledger.quorum import QUORUM_TYPES, Proposals, QuorumError
from openswarm.ledger.tasks import TaskBook, TaskError
from openswarm.ledger.ticks import TickError, check_tick_form, check_tick_signature, majority_time
from openswarm.ledger.tx import CONTRACT_TYPES, Transaction, TxFormatError, required_role
from openswarm.pki import ROLES, CertIdentity, PkiError, certificate_identity, verify_certificate
from openswarm.pki import verify_signature as verify_sig

#: Seconds of ledger time for which a sender's nonces are kept; older transactions are stale.
NONCE_WINDOW_S = 900.0
#: Largest distance between a transaction's own timestamp and ledger time that is accepted.
MAX_TX_SKEW_S = 120.0
_CERT_CACHE_SIZE = 4096

Events = list[dict[str, Any]]


class Rejected(Exception):
    """A transaction refused by the ledger; str() is the recorded reason."""


class NotPermitted(Rejected):
    """Refused because of who sent it: not admitted, or the wrong role."""


class LedgerState:
    """Admitted identities, used nonces and training contracts, plus the chain head."""

    def __init__(self, genesis: dict[str, Any]) -> None:
        check_genesis(genesis)
        self.genesis = genesis
        self.swarm: str = genesis["swarm"]
        self.ca_cert_pem: bytes = genesis["ca_cert"].encode("ascii")
        self.admitted: dict[str, str] = {e["name"]: e["role"] for e in genesis["admitted"]}
        # With several site CAs: site -> its CA, and the site each identity is admitted under
        # (only that site's CA may vouch for it). Empty with the single `ca_cert`.
        self.sites: dict[str, bytes] = genesis_sites(genesis)
        self.admitted_sites: dict[str, str] = {
            e["name"]: e["site"] for e in genesis["admitted"] if "site" in e
        }
        # Admin changes approved by fewer than `admin_quorum` admins so far (quorum.py).
        self.proposals = Proposals(genesis.get("admin_quorum", 1))
        # Contracts exist only as the genesis or an admin's contract_create made them, with
        # their settings (none given: the defaults); a peer can join one, never configure it.
        self.tasks = TaskBook()  # what the sites should run (ledger/tasks.py)
        self.operators = OperatorRoster()  # who runs them, as which peer (ledger/operators.py)
        self.contracts: dict[str, TrainingContract] = {
            name: TrainingContract(name, ContractSettings.from_payload(settings))
            for name, settings in sorted(genesis["contracts"].items())
        }
        # sender -> nonce -> tx timestamp, for transactions within NONCE_WINDOW_S of ledger time
        self.nonces: dict[str, dict[str, float]] = {}
        self._nonce_expiry: list[tuple[float, str, str]] = []  # min-heap (timestamp, sender, nonce)
        # Ledger time: the latest time a majority of ledger nodes have reached (ticks.py);
        # 0 until a majority has ticked.
        self.ledger_time: float = 0.0
        self.latest_ticks: dict[str, float] = {}
        # tx id -> height of its block, while a replay could still pass the freshness checks;
        # in commit order with the ledger time of the commit (None: before time was known)
        self.tx_heights: dict[str, int] = {}
        self._tx_expiry: deque[tuple[float | None, str]] = deque()
        # contract -> height of the last block that changed it (what watchers wait on)
        self.changed_at: dict[str, int] = {}
        head = genesis_block(genesis)
        self.genesis_hash: str = head["hash"]
        self.height: int = 0
        self.last_hash: str = head["hash"]
        self.certs = Certificates()  # certificates stored once, in their first block
        self._cert_cache: dict[str, tuple[CertIdentity, str | None] | str] = {}
        self._good_signatures: dict[tuple[str, str], bool] = {}
        self._signature_lock = threading.Lock()

    # --- the one entry point -------------------------------------------------------------
    def commit(self, record: str) -> dict[str, Any]:
        """Check and apply one ordered record (a transaction or a ledger node's tick); return
        the new block (applied or rejected)."""
        height = self.height + 1
        try:
            data = json.loads(record)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            data = exc
        if isinstance(data, dict) and set(data) == {"tick"}:
            return self._advance(self._commit_tick(data["tick"], height))
        try:
            if isinstance(data, Exception):
                raise TxFormatError(f"transaction is not valid JSON: {data}")
            tx = Transaction.from_dict(data)
        except TxFormatError as exc:
            outcome = {"status": "rejected", "reason": f"malformed transaction: {exc}"}
            block = tx_block(height, self.last_hash, {"raw": record}, "", outcome)
            return self._advance(block)
        try:
            result = self._check_and_apply(tx, height)
            outcome = {"status": "applied", "reason": None, "result": result}
        except Rejected as exc:
            outcome = {"status": "rejected", "reason": str(exc)}
        stored = {**tx.to_dict(), "cert": self.certs.compact(tx.cert)}
        block = tx_block(height, self.last_hash, stored, tx.tx_id, outcome)
        if tx.tx_id not in self.tx_heights:
            self.tx_heights[tx.tx_id] = height
            self._tx_expiry.append((self.ledger_time or None, tx.tx_id))
        return self._advance(block)

    def _advance(self, block: dict[str, Any]) -> dict[str, Any]:
        self.height = block["height"]
        self.last_hash = block["hash"]
        return block

    # --- checks ---------------------------------------------------------------------------
    def _check_and_apply(self, tx: Transaction, height: int) -> dict[str, Any]:
        if tx.tx_id in self.tx_heights:
            raise Rejected(f"replayed transaction: already in block {self.tx_heights[tx.tx_id]}")
        self.precheck(tx)
        self._use_nonce(tx)  # burnt even if the call below is refused, so it can't be replayed
        if tx.type in CONTRACT_TYPES:
            return self._apply_contract(tx, height)
        return self._apply_admin(tx)

    def precheck(self, tx: Transaction) -> CertIdentity:
        """Every check of who sent `tx` and whether it is fresh; changes no state.

        Raises NotPermitted (not admitted, wrong role) or Rejected (anything else).
        """
        self._check_time(tx)
        who, site = self._certificate(tx.cert)
        self._check_validity(who)
        if who.name != tx.sender:
            raise Rejected(f"sender {tx.sender!r} does not match the certificate ({who.name!r})")
        self._check_role(who.name, who.role, required_role(tx.type), tx.type)
        self._check_site(who.name, site)
        self.check_signature(tx, who.name)
        self._check_fresh(tx)
        return who

    def check_signature(self, tx: Transaction, who: str) -> None:
        """Rejected unless `tx`'s signature verifies under its certificate. Good ones are
        remembered (a pure function of the signed bytes, which hold the certificate, and
        the signature), so a transaction checked before ordering is not verified again."""
        key = (tx.tx_id, tx.signature)
        with self._signature_lock:  # also used from the service's threads
            if key in self._good_signatures:
                return
        try:
            verify_sig(tx.cert.encode("ascii"), tx.signed_bytes(), tx.signature_bytes())
        except (PkiError, TxFormatError, UnicodeEncodeError) as exc:
            raise Rejected(f"bad signature from {who!r}: {exc}") from exc
        with self._signature_lock:
            if len(self._good_signatures) >= _CERT_CACHE_SIZE:
                del self._good_signatures[next(iter(self._good_signatures))]
            self._good_signatures[key] = True

    def _check_role(self, name: str, role: str, needed: str, tx_type: str) -> None:
        admitted_role = self.admitted.get(name)
        if admitted_role is None:
            raise NotPermitted(f"identity {name!r} is not admitted to swarm {self.swarm!r}")
        if admitted_role != role:
            raise NotPermitted(
                f"identity {name!r} is admitted as {admitted_role!r} but its certificate "
                f"says {role!r}"
            )
        if role != needed:
            raise NotPermitted(f"{tx_type!r} needs role {needed!r}; {name!r} is {role!r}")

    def _check_site(self, name: str, site: str | None) -> None:
        """NotPermitted unless `site`, whose CA issued the certificate, is `name`'s own."""
        if not self.sites:
            return
        own = self.admitted_sites.get(name)
        if site != own:
            raise NotPermitted(
                f"identity {name!r} is admitted under site {own!r}, but its certificate was "
                f"issued by the CA of site {site!r}; only a site's own CA can vouch for its "
                "identities"
            )

    def admits(self, name: str, role: str) -> bool:
        """True if `name` is admitted now, with `role`."""
        return self.admitted.get(name) == role

    def vouch(self, cert_pem: str) -> CertIdentity:
        """Who `cert_pem` names, if the ledger admits it now: its name admitted with its role,
        the certificate issued by that name's site CA. NotPermitted or Rejected otherwise."""
        who, site = self._certificate(cert_pem)
        if not self.admits(who.name, who.role):
            raise NotPermitted(
                f"{who.spiffe_id} is not admitted to this ledger with role {who.role!r} "
                "(never admitted, or revoked)"
            )
        self._check_site(who.name, site)
        return who

    # --- nonces and ledger time -----------------------------------------------------------
    @property
    def time_established(self) -> bool:
        """True once a majority of the ledger nodes have ticked."""
        return self.ledger_time > 0.0

    def _check_time(self, tx: Transaction) -> None:
        if not self.time_established:
            raise Rejected(
                "ledger time is not established yet: fewer than a majority of the ledger "
                "nodes have ticked; start them (or wait a second) and resubmit"
            )
        skew = tx.timestamp - self.ledger_time
        if abs(skew) > MAX_TX_SKEW_S:
            raise Rejected(
                f"transaction timestamp is {skew:+.0f} s off ledger time (limit "
                f"{MAX_TX_SKEW_S:.0f} s); fix the sender's clock and sign it again"
            )

    def _check_validity(self, who: CertIdentity) -> None:
        when = dt.datetime.fromtimestamp(self.ledger_time, tz=dt.UTC)
        if not who.not_before <= when <= who.not_after:
            raise Rejected(
                f"certificate of {who.name!r} is not valid at ledger time {when.isoformat()} "
                f"(valid {who.not_before.isoformat()} to {who.not_after.isoformat()})"
            )

    def _commit_tick(self, tick: Any, height: int) -> dict[str, Any]:
        try:
            result = self._apply_tick(tick)
            outcome: dict[str, Any] = {"status": "applied", "reason": None, "result": result}
        except (TickError, Rejected) as exc:
            outcome = {"status": "rejected", "reason": str(exc)}
        if isinstance(tick, dict) and isinstance(tick.get("cert"), str):
            tick = {**tick, "cert": self.certs.compact(tick["cert"])}
        return make_block(height, self.last_hash, tick=tick, outcome=outcome)

    def _apply_tick(self, tick: Any) -> dict[str, Any]:
        node, when, cert = check_tick_form(tick, self.swarm)
        who, site = self._certificate(cert)
        if who.name != node:
            raise Rejected(f"tick of {node!r} carries the certificate of {who.name!r}")
        self._check_role(who.name, who.role, "ledger", "tick")
        self._check_site(who.name, site)
        if self.time_established:
            self._check_validity(who)
        previous = self.latest_ticks.get(node)
        if previous is not None and when <= previous:
            raise Rejected(f"tick of {node!r} at {when} is not after its last one ({previous})")
        check_tick_signature(tick)
        self.latest_ticks[node] = when
        self._advance_time()
        return {"ledger_time": self.ledger_time}

    def _advance_time(self) -> None:
        nodes = [name for name, role in self.admitted.items() if role == "ledger"]
        reached = majority_time(self.latest_ticks, nodes)
        if reached is not None and reached > self.ledger_time:
            if not self.ledger_time:  # time is known now: it is when the earlier ones came
                self._tx_expiry = deque((t or reached, i) for t, i in self._tx_expiry)
            self.ledger_time = reached
            self._expire_nonces()
            self._expire_tx_ids()
            self.proposals.expire(reached)

    def _check_fresh(self, tx: Transaction) -> None:
        oldest = self.ledger_time - NONCE_WINDOW_S
        if tx.timestamp < oldest:
            raise Rejected(
                f"stale transaction: its timestamp is {self.ledger_time - tx.timestamp:.0f} s "
                f"before ledger time (limit {NONCE_WINDOW_S:.0f} s); sign it again"
            )
        if tx.nonce in self.nonces.get(tx.sender, {}):
            raise Rejected(f"replayed nonce {tx.nonce!r} from {tx.sender!r}")

    def _use_nonce(self, tx: Transaction) -> None:
        """Record the nonce; it is forgotten once it falls out of the window."""
        timestamp = float(tx.timestamp)
        self.nonces.setdefault(tx.sender, {})[tx.nonce] = timestamp
        heapq.heappush(self._nonce_expiry, (timestamp, tx.sender, tx.nonce))

    def _expire_nonces(self) -> None:
        oldest = self.ledger_time - NONCE_WINDOW_S
        while self._nonce_expiry and self._nonce_expiry[0][0] < oldest:
            _, sender, nonce = heapq.heappop(self._nonce_expiry)
            used = self.nonces[sender]
            del used[nonce]
            if not used:
                del self.nonces[sender]

    def _expire_tx_ids(self) -> None:
        """Forget the ids of transactions committed so long ago that a replay is refused as
        stale anyway (its timestamp is at most MAX_TX_SKEW_S past its commit's ledger time)."""
        oldest = self.ledger_time - NONCE_WINDOW_S - MAX_TX_SKEW_S
        while self._tx_expiry and (self._tx_expiry[0][0] or oldest) < oldest:
            _, tx_id = self._tx_expiry.popleft()
            del self.tx_heights[tx_id]

    def nonce_count(self) -> int:
        """How many nonces are remembered (bounded by the window)."""
        return len(self._nonce_expiry)

    def _certificate(self, cert_pem: str) -> tuple[CertIdentity, str | None]:
        """Who the certificate names and the site whose CA issued it (None with one CA)."""
        cached = self._cert_cache.get(cert_pem)
        if cached is None:
            if len(self._cert_cache) >= _CERT_CACHE_SIZE:
                # Drop the oldest entry: callers may send any number of distinct certificates.
                del self._cert_cache[next(iter(self._cert_cache))]
            try:
                cached = self._issuer(cert_pem.encode("ascii"))
            except (PkiError, UnicodeEncodeError, ValueError) as exc:
                cached = f"certificate refused: {exc}"
            self._cert_cache[cert_pem] = cached
        if isinstance(cached, str):
            raise Rejected(cached)
        return cached

    def _issuer(self, cert: bytes) -> tuple[CertIdentity, str | None]:
        # Chain check only: validity is judged at the transaction's own time.
        at = certificate_identity(cert).not_before
        if not self.sites:
            return verify_certificate(cert, self.ca_cert_pem, at=at), None
        for site, ca in sorted(self.sites.items()):
            try:
                return verify_certificate(cert, ca, at=at), site
            except PkiError:
                continue
        name = certificate_identity(cert).spiffe_id
        raise PkiError(
            f"certificate of {name} is issued by none of this swarm's site CAs "
            f"({', '.join(sorted(self.sites))})"
        )

    # --- application ----------------------------------------------------------------------
    def _apply_contract(self, tx: Transaction, height: int) -> dict[str, Any]:
        if not tx.contract:
            raise Rejected(f"{tx.type!r} needs a training contract name")
        contract = self.contracts.get(tx.contract)
        if contract is None:
            shown = tx.contract if len(tx.contract) <= 80 else tx.contract[:80] + "…"
            raise Rejected(
                f"training contract {shown!r} does not exist; an admin creates it (in the "
                "genesis, or with a contract_create transaction)"
            )
        call = ContractCall(
            type=tx.type,
            round=tx.round,
            sender=tx.sender,
            payload=tx.payload,
            timestamp=self.ledger_time,
            prev_hash=self.last_hash,
            height=height,
        )
        try:
            result = contract.apply(call)
        except ContractError as exc:
            raise Rejected(str(exc)) from exc
        self.changed_at[tx.contract] = height
        return result

    def _apply_admin(self, tx: Transaction) -> dict[str, Any]:
        """Check the admin change; apply it now, or count it towards the admin quorum."""
        if tx.type == "archive":
            return {"events": self._archive(tx.payload)}
        change = self._admin_change(tx)  # every check first: a refusal changes nothing
        if tx.type not in QUORUM_TYPES or self.proposals.quorum == 1:
            return {"events": self._applied(change)}
        try:
            digest, approvers, reached = self.proposals.approve(
                tx.type, tx.contract, tx.payload, tx.sender, self.ledger_time
            )
        except QuorumError as exc:
            raise Rejected(str(exc)) from exc
        if reached:
            return {"events": [{**e, "approvers": approvers} for e in self._applied(change)]}
        kind = "proposed" if len(approvers) == 1 else "approved"
        event = {"kind": kind, "proposal": digest, "type": tx.type, "contract": tx.contract,
                 "approvers": approvers, "needed": self.proposals.quorum}  # fmt: skip
        return {"events": [event]}

    def _applied(self, change: Callable[[], Events]) -> Events:
        """Apply a checked change; approvals of those it leaves without the admin role go."""
        events = change()
        self.proposals.keep_approvers(lambda name: self.admitted.get(name) == "admin")
        return events

    def _admin_change(self, tx: Transaction) -> Callable[[], Events]:
        if tx.type == "operator_heartbeat":
            try:
                return self.operators.heartbeat(tx.payload, tx.sender, self.ledger_time,
                                                self.admitted, self.admitted_sites)  # fmt: skip
            except (OperatorError, ContractError) as exc:
                raise Rejected(str(exc)) from exc
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                raise _malformed(tx.type, exc) from exc
        if tx.type.startswith("task_"):
            try:
                return self.tasks.change(tx.type, tx.payload, tx.sender, self.ledger_time,
                                         self.contracts, self.operators)  # fmt: skip
            except TaskError as exc:
                raise Rejected(str(exc)) from exc
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                # a shape no check foresaw: refused the same way on every replica, never a
                # halt (only the exception's type goes in the reason: its text may vary)
                raise _malformed(tx.type, exc) from exc
        if tx.type == "admit":
            return self._admit(tx.payload)
        if tx.type == "revoke":
            return self._revoke(tx.payload)
        return self._create_contract(tx.contract, tx.payload)

    def _admit(self, payload: Any) -> Callable[[], Events]:
        name, role = payload.get("name"), payload.get("role")
        if not isinstance(name, str) or not name or role not in ROLES:
            raise Rejected(f"'admit' needs payload name (string) and role in {ROLES}")
        site = self._admit_site(name, payload.get("site"))
        if role != "admin":
            self._check_admins_left(name)

        def apply() -> Events:
            self.admitted[name] = role
            if role != "operator":
                self.operators.forget(name)
            if site is not None:
                self.admitted_sites[name] = site
            self._advance_time()
            event = {"kind": "admitted", "name": name, "role": role}
            return [event if site is None else {**event, "site": site}]

        return apply

    def _admit_site(self, name: str, site: Any) -> str | None:
        if not self.sites:
            if site is not None:
                raise Rejected(f"'admit' of {name!r} names site {site!r}, but this swarm "
                               "has one CA and no sites")  # fmt: skip
            return None
        if not isinstance(site, str) or site not in self.sites:
            raise Rejected(
                f"'admit' of {name!r} must name the site whose CA issues its certificate "
                f"(payload site, one of {', '.join(sorted(self.sites))})"
            )
        return str(site)

    def _revoke(self, payload: Any) -> Callable[[], Events]:
        name = payload.get("name")
        if not isinstance(name, str) or name not in self.admitted:
            raise Rejected(f"cannot revoke {name!r}: not admitted")
        self._check_admins_left(name)

        def apply() -> Events:
            del self.admitted[name]
            self.admitted_sites.pop(name, None)
            self.latest_ticks.pop(name, None)
            self.operators.forget(name)
            self._advance_time()
            for contract in self.contracts.values():  # revocation takes effect at once
                contract.expel(name)
                self.changed_at[contract.name] = self.height + 1
            return [{"kind": "revoked", "name": name},
                    *self.tasks.operator_gone(name, self.ledger_time)]  # fmt: skip

        return apply

    def _check_admins_left(self, name: str) -> None:
        """Rejected if taking `name`'s admin role would leave fewer admins than the quorum."""
        if self.admitted.get(name) != "admin":
            return
        left = sum(role == "admin" for role in self.admitted.values()) - 1
        if left < self.proposals.quorum:
            raise Rejected(
                f"cannot take the admin role from {name!r}: {self.proposals.quorum} admin "
                f"approval(s) are needed for admin changes and only {left} admin(s) would be "
                "left; admit another admin first"
            )

    def _create_contract(self, name: str, payload: Any) -> Callable[[], Events]:
        if not name:
            raise Rejected("'contract_create' needs a contract name")
        if name in self.contracts:
            raise Rejected(f"training contract {name!r} already exists")
        try:
            unknown = sorted(set(payload) - set(SETTINGS_KEYS))
            if unknown:
                raise ContractError(
                    f"contract_create: unknown setting(s) {', '.join(unknown)}; known: "
                    f"{', '.join(SETTINGS_KEYS)}"
                )
            contract = TrainingContract(name, ContractSettings.from_payload(payload))
        except ContractError as exc:
            raise Rejected(str(exc)) from exc

        def apply() -> Events:
            self.contracts[name] = contract
            self.changed_at[name] = self.height + 1
            return [{"kind": "contract_created", "contract": name}]

        return apply

    @staticmethod
    def _archive(payload: Any) -> Events:
        # Allows the ordering layer to drop records ordered at or before position `upto`
        # (every node holds them in its chain file); the chain itself loses nothing.
        upto = payload.get("upto")
        if isinstance(upto, bool) or not isinstance(upto, int) or upto < 1:
            raise Rejected("'archive' needs payload upto: a positive ordering position")
        return [{"kind": "archived", "upto": upto}]

    def record_of(self, block: dict[str, Any]) -> str:
        """The record of `block`, the next block to apply (certificates expanded)."""
        return record_of(block, self.certs.by_ref)

    # --- queries --------------------------------------------------------------------------
    def snapshot(self, contract: str | None = None, recent: int | None = None) -> dict[str, Any]:
        """JSON-safe view of the state (one contract, or all); `recent` keeps only that many
        rounds of a contract's history and metrics."""
        if contract is not None:
            found = self.contracts.get(contract)
            return {
                "height": self.height,
                "last_hash": self.last_hash,
                "contract": contract,
                "changed_at": self.changed_at.get(contract, 0),
                "state": None if found is None else found.snapshot(recent),
            }
        return {
            "height": self.height,
            "last_hash": self.last_hash,
            "swarm": self.swarm,
            "genesis_hash": self.genesis_hash,
            "admitted": dict(sorted(self.admitted.items())),
            "sites": dict(sorted(self.admitted_sites.items())),
            "admin_quorum": self.proposals.quorum,
            "proposals": self.proposals.snapshot(),
            "contracts": {name: c.snapshot() for name, c in sorted(self.contracts.items())},
            "tasks": self.tasks.snapshot(),
            "operators": self.operators.snapshot(),
            "ledger_time": self.ledger_time,
        }


def _malformed(tx_type: str, exc: Exception) -> Rejected:
    return Rejected(f"'{tx_type}': malformed payload ({type(exc).__name__}); see the "
                    "transaction's documented fields")  # fmt: skip


__all__ = ["MAX_TX_SKEW_S", "NONCE_WINDOW_S", "LedgerState", "NotPermitted", "Rejected"]

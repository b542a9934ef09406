"""`openswarm ledger …`: create, run, inspect and verify ledger replicas."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, NoReturn

import typer

from openswarm import DEFAULT_CONTRACT
from openswarm.cli.merge_options import MERGE_OPTION_HELP, parse_merge_options

ledger_app = typer.Typer(help="Permissioned ledger replicas.", no_args_is_help=True)

IDENTITY_HELP = "Identity folder for mTLS (default: the context's, or $OPENSWARM_IDENTITY)."
ADMIN_HELP = "An admin identity folder (default: the context's)."
CONNECT_HELP = "HOST:PORT[,HOST:PORT…] of nodes (default: the context's)."
CONTEXT_HELP = "The admin context to use (default: the current one; see 'openswarm context')."


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@ledger_app.command()
def genesis(
    pki_dir: Path = typer.Option(
        None, "--pki", help="The CA folder made by 'openswarm pki init' (one CA for the swarm)."
    ),
    site: list[str] = typer.Option(
        [], "--site", help="NAME=CA_DIR (repeatable): a site and its own CA, instead of --pki."
    ),
    out: Path = typer.Option(..., "--out", help="Where to write the genesis JSON."),
    admit: list[str] = typer.Option(
        [],
        "--admit",
        help="NAME:ROLE to admit, NAME:ROLE@SITE with --site (repeatable). "
        "Default: every identity issued under the CA folder(s).",
    ),
    contract: list[str] = typer.Option(
        [], "--contract", help=f"Training contract to create (default {DEFAULT_CONTRACT})."
    ),
    min_peers: int = typer.Option(None, help="min_peers of these contracts (default 2)."),
    merge_method: str = typer.Option(None, help="Merge method of these contracts (default mean)."),
    merge_option: list[str] = typer.Option([], "--merge-option", help=MERGE_OPTION_HELP),
    leader_timeout: float = typer.Option(
        None, "--leader-timeout", help="Seconds before a silent round leader is replaced."
    ),
    weight_policy: str = typer.Option(
        None,
        "--weight-policy",
        help="How these contracts weigh sites: equal, declared (each site's 1-100, the "
        "default) or fixed (by --weight).",
    ),
    weight: list[str] = typer.Option(
        [], "--weight", help="NAME=W (repeatable): a site's fixed weight (--weight-policy fixed)."
    ),
    admin_quorum: int = typer.Option(
        1,
        "--admin-quorum",
        help="How many admins must approve each admit, revoke and "
        "contract_create (k of the n admins).",
    ),
) -> None:
    """Write the genesis file that starts a ledger network."""
    from openswarm.ledger.genesis import GenesisError, make_genesis

    if (pki_dir is None) == (not site):
        _fail("give --pki CA_DIR (one CA for the swarm) or --site NAME=CA_DIR for every site")
    try:
        if pki_dir is not None:
            (swarm, ca_pem), sites = _single_ca(pki_dir), None
        else:
            ca_pem, sites = None, _site_cas(site)
            swarm = _ca_swarm(next(iter(sites.values())))
        pairs = _admitted(admit, pki_dir, dict(_site_dirs(site)))
        try:
            merge_options = parse_merge_options(merge_option) or None
        except ValueError as exc:
            _fail(str(exc))
        chosen = {"min_peers": min_peers, "merge_method": merge_method,
                  "merge_options": merge_options,
                  "leader_timeout_s": leader_timeout, "weight_policy": weight_policy,
                  "weights": _fixed_weights(weight)}  # fmt: skip
        settings = {key: value for key, value in chosen.items() if value is not None}
        contracts = {name: dict(settings) for name in (contract or [DEFAULT_CONTRACT])}
        record = make_genesis(
            swarm,
            ca_pem,
            pairs,
            contracts=contracts,
            created=dt.datetime.now(dt.UTC).timestamp(),
            sites=sites,
            admin_quorum=admin_quorum,
        )
    except (GenesisError, OSError) as exc:
        _fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    typer.echo(f"genesis for swarm {swarm!r} with {len(record['admitted'])} identities → {out}")
    if sites:
        typer.echo(f"  sites: {', '.join(sorted(sites))}; give each identity folder the bundle "
                   f"of their CAs: openswarm pki trust FOLDER --genesis {out}")  # fmt: skip
    if admin_quorum > 1:
        typer.echo(f"  admin changes need the approval of {admin_quorum} admins")


def _fixed_weights(items: list[str]) -> dict[str, float] | None:
    """The --weight NAME=W options as a table (None when there are none)."""
    table: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or name in table:
            _fail(f"--weight {item!r}: write NAME=W, each NAME once, e.g. site-1=3")
        try:
            table[name] = float(value)
        except ValueError:
            _fail(f"--weight {item!r}: W must be a number, e.g. site-1=3")
    return table or None


def _single_ca(pki_dir: Path) -> tuple[str, bytes]:
    """The swarm and CA certificate of a CA folder made by 'openswarm pki init'."""
    try:
        swarm = json.loads((pki_dir / "swarm.json").read_text())["swarm"]
        return str(swarm), (pki_dir / "ca.crt").read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        _fail(f"{pki_dir} is not a CA folder made by 'openswarm pki init' ({exc})")


def _site_dirs(site: list[str]) -> list[tuple[str, Path]]:
    """(site name, CA folder or ca.crt) of each --site NAME=CA_DIR."""
    found = []
    for item in site:
        name, sep, where = item.partition("=")
        if not sep or not name or not where:
            _fail(f"--site {item!r}: write NAME=CA_DIR, e.g. hospital-a=ca-hospital-a")
        found.append((name, Path(where)))
    if len({name for name, _ in found}) != len(found):
        _fail("each --site NAME is given once")
    return found


def _site_cas(site: list[str]) -> dict[str, bytes]:
    from openswarm.pki import PkiError, load_ca_cert

    try:
        return {name: load_ca_cert(where) for name, where in _site_dirs(site)}
    except PkiError as exc:
        _fail(f"--site: {exc}")


def _ca_swarm(ca_pem: bytes) -> str:
    from openswarm.pki.certs import ca_swarm, load_certificate

    return ca_swarm(load_certificate(ca_pem)) or ""


def _admitted(
    admit: list[str], pki_dir: Path | None, site_dirs: dict[str, Path]
) -> list[tuple[str, ...]]:
    """--admit NAME:ROLE[@SITE] items, or every identity issued under the CA folder(s)."""
    from openswarm.ledger.genesis import admitted_from_pki

    pairs: list[tuple[str, ...]] = []
    for item in admit:
        name, sep, role = item.partition(":")
        role, at, where = role.partition("@")
        if not sep or bool(at) != bool(site_dirs):
            form = "NAME:ROLE@SITE, e.g. site-1:peer@hospital-a" if site_dirs else (
                "NAME:ROLE, e.g. site-1:peer")  # fmt: skip
            _fail(f"--admit {item!r}: write {form}")
        pairs.append((name, role, where) if at else (name, role))
    if pairs:
        return pairs
    if pki_dir is not None:
        return list(admitted_from_pki(pki_dir))
    for name, where in site_dirs.items():
        if where.is_dir():
            pairs.extend((n, r, name) for n, r in admitted_from_pki(where))
    return pairs


@ledger_app.command()
def start(
    config: Path = typer.Option(..., "--config", help="Ledger node YAML config."),
    etcd_bin: str = typer.Option(
        None, "--etcd-bin", help="The etcd binary for a managed member (default: etcd on PATH)."
    ),
) -> None:
    """Run one ledger node (and its managed etcd member, if configured) until interrupted."""
    import dataclasses

    from openswarm.ledger.config import ConfigError, LedgerConfig
    from openswarm.ledger.genesis import GenesisError
    from openswarm.ledger.node import serve_forever
    from openswarm.ledger.store import StoreError

    try:
        loaded = LedgerConfig.load(config)
        if etcd_bin and loaded.etcd is not None:
            etcd = dataclasses.replace(loaded.etcd, binary=etcd_bin)
            loaded = dataclasses.replace(loaded, etcd=etcd)
        serve_forever(loaded)
    except (ConfigError, GenesisError, StoreError, OSError) as exc:
        _fail(str(exc))


def _client(connect: str | None, identity: Path | None, context: str | None = None) -> Any:
    """A ledger client: `connect` and `identity` where given, else from the context."""
    from openswarm.admin.contexts import ContextError, resolve
    from openswarm.ledger.client import LedgerClient
    from openswarm.pki import Identity, PkiError

    try:
        endpoints, folder = resolve(connect, identity, context)
        return LedgerClient(list(endpoints), Identity.load(folder), timeout_s=10)
    except (ContextError, PkiError) as exc:
        _fail(str(exc))


@ledger_app.command()
def status(
    connect: str = typer.Option(None, "--connect", help=CONNECT_HELP),
    identity: Path = typer.Option(None, "--identity", help=IDENTITY_HELP),
    context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Ledger nodes (each one's applied height), ordering layer (etcd members, leader,
    revision, database size), ledger time."""
    from openswarm.admin.client import node_status

    with _client(connect, identity, context) as client:
        nodes = node_status(client)
    answered = [info for info in nodes.values() if "error" not in info]
    if not answered:
        _fail("no ledger node answered: " + "; ".join(i["error"] for i in nodes.values()))
    if as_json:
        shown = nodes if len(nodes) > 1 else answered[0]
        typer.echo(json.dumps(shown, indent=2, sort_keys=True))
        return
    info = answered[0]
    ordering = info.get("ordering") or {}
    when = dt.datetime.fromtimestamp(info["ledger_time"], dt.UTC).isoformat(timespec="seconds")
    typer.echo(f"swarm        {info['swarm']}")
    typer.echo(f"ledger time  {when}  (ticks: {len(info.get('ticks') or {})} nodes)")
    typer.echo(
        f"ordering     {ordering.get('kind', '?')}, revision {ordering.get('revision', '-')}"
    )
    for endpoint, node in nodes.items():
        if "error" in node:
            typer.echo(f"node         {endpoint}  UNREACHABLE: {node['error']}")
            continue
        flags = "" if node["has_quorum"] else "  NO QUORUM"
        flags += f"  HALTED: {node['halted']}" if node["halted"] else ""
        typer.echo(
            f"node         {node['node']} {endpoint}  height {node['height']}  position "
            f"{node['position']}  head {node['last_hash'][:12]}…{flags}"
        )
    for node in answered:
        for member in (node.get("ordering") or {}).get("members") or []:
            if not member.get("self"):
                continue
            status = member.get("status") or {}
            leader = any(m.get("leader") and m.get("self") for m in [member])
            typer.echo(
                f"etcd member  {member.get('name')}{'  LEADER' if leader else ''}  "
                f"db {int(status.get('dbSize') or 0) / 1e6:.1f} MB  "
                f"(in use {int(status.get('dbSizeInUse') or 0) / 1e6:.1f} MB)"
            )


@ledger_app.command()
def show(
    data_dir: Path = typer.Option(None, "--data-dir", help="A replica's data folder (offline)."),
    connect: str = typer.Option(None, "--connect", help="Or read from a live replica."),
    identity: Path = typer.Option(None, "--identity", help=IDENTITY_HELP),
    context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
    start: int = typer.Option(0, "--from", help="First height to show."),
    as_json: bool = typer.Option(False, "--json", help="One JSON block per line."),
) -> None:
    """Blocks and their transactions."""
    from openswarm.ledger.client import LedgerError
    from openswarm.ledger.store import StoreError, read_chain

    if data_dir is not None and (connect or context):
        _fail("give --data-dir DIR (offline) or a live ledger (--connect/--context), not both")
    if data_dir is None and not connect and not context:
        from openswarm.admin.contexts import ContextError, ContextStore

        try:
            ContextStore().get()
        except ContextError:
            _fail("give --data-dir DIR (a replica's folder, offline), or a live ledger: "
                  "--connect HOST:PORT, --context NAME, or a current context")  # fmt: skip
    try:
        if data_dir is not None:
            if not data_dir.exists():
                _fail(f"{data_dir} does not exist")
            blocks = read_chain(data_dir)[start:]
        else:
            with _client(connect, identity, context) as client:
                blocks = client.blocks(start)
    except (LedgerError, StoreError) as exc:
        _fail(str(exc))
    for block in blocks:
        typer.echo(json.dumps(block, sort_keys=True) if as_json else describe_block(block))


def describe_block(block: dict[str, Any]) -> str:
    """One human-readable line for a block."""
    head = f"#{block['height']:<6} {block['hash'][:12]}"
    if "genesis" in block:
        g = block["genesis"]
        return f"{head} genesis swarm={g['swarm']} admitted={len(g['admitted'])}"
    tx, outcome = block.get("tx", {}), block.get("outcome", {})
    if "tick" in block:
        tick = block["tick"]
        when = dt.datetime.fromtimestamp(tick["time"], tz=dt.UTC).strftime("%H:%M:%S.%f")[:-3]
        verdict = (
            "ok" if outcome.get("status") == "applied" else f"REJECTED: {outcome.get('reason')}"
        )
        return f"{head} {when} {'tick':<14} {tick['node']} → {verdict}"
    if "raw" in tx:
        return f"{head} malformed: {outcome.get('reason')}"
    when = dt.datetime.fromtimestamp(tx["timestamp"], tz=dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    where = f" {tx['contract']} r{tx['round']}" if tx.get("contract") else ""
    verdict = "ok" if outcome.get("status") == "applied" else f"REJECTED: {outcome.get('reason')}"
    payload = json.dumps(tx["payload"], sort_keys=True)
    if len(payload) > 80:
        payload = payload[:77] + "..."
    return f"{head} {when} {tx['type']:<14} {tx['sender']}{where} {payload} → {verdict}"


@ledger_app.command()
def verify(
    data_dir: Path = typer.Argument(
        ..., help="A replica's data folder, or a ledger folder whose replica folders hold chains."
    ),
    no_head: bool = typer.Option(
        False, "--no-head", help="Do not require the replica's signed head (head.json)."
    ),
) -> None:
    """Re-check every block hash, link, signature and outcome of stored chains offline,
    and that each chain reaches its replica's signed head (so it was not truncated)."""
    from openswarm.ledger.verify import chain_dirs, verify_chain_dir

    if not data_dir.exists():
        _fail(f"{data_dir} does not exist")
    try:
        folders = chain_dirs(data_dir)
    except OSError as exc:
        _fail(f"cannot read {data_dir}: {exc.strerror or exc}")
    if not folders:
        _fail(f"no chain in {data_dir}: give a replica's data folder (holding chain.jsonl) or a "
              "ledger folder whose replica folders hold one")  # fmt: skip
    failed = 0
    for folder in folders:
        report = verify_chain_dir(folder, require_head=not no_head)
        label = f"{folder}: " if len(folders) > 1 or folder != data_dir else ""
        if report.ok:
            typer.echo(f"{label}ok: {report.blocks} blocks verified, head {report.head_hash}")
            continue
        failed += 1
        where = f"block {report.bad_height}" if report.bad_height is not None else "chain"
        typer.secho(f"{label}error: {where} is bad: {report.problem}", fg="red", err=True)
    if failed:
        raise typer.Exit(1)


@ledger_app.command("add-replica")
def add_replica(
    peer_url: str = typer.Argument(..., help="The new node's etcd peer URL (https://HOST:PORT)."),
    connect: str = typer.Option(None, "--connect", help=CONNECT_HELP),
    identity: Path = typer.Option(None, "--identity", help=ADMIN_HELP),
    context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
) -> None:
    """Add an etcd member to a running ledger; then start its node with member.state
    'existing' (admit the node's ledger identity too, so that its clock ticks count)."""
    from openswarm.ledger.client import LedgerError

    try:
        with _client(connect, identity, context) as client:
            client.add_replica(peer_url)
    except LedgerError as exc:
        _fail(str(exc))
    typer.echo(f"added etcd member at {peer_url}; start its ledger node now")


@ledger_app.command("remove-replica")
def remove_replica(
    name: str = typer.Argument(..., help="The etcd member's name (its ledger node's name)."),
    connect: str = typer.Option(None, "--connect", help=CONNECT_HELP),
    identity: Path = typer.Option(None, "--identity", help=ADMIN_HELP),
    context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
) -> None:
    """Remove an etcd member from a running ledger; stop its node afterwards."""
    from openswarm.ledger.client import LedgerError

    try:
        with _client(connect, identity, context) as client:
            client.remove_replica(name)
    except LedgerError as exc:
        _fail(str(exc))
    typer.echo(f"removed etcd member {name}")


@ledger_app.command("admit")
def admit_cmd(
    name: str = typer.Argument(..., help="The identity's name (as its certificate says)."),
    role: str = typer.Option(..., "--role", help="peer, ledger, admin or operator."),
    site: str = typer.Option(None, "--site", help="Its site, whose CA issues its certificate."),
    connect: str = typer.Option(None, "--connect", help=CONNECT_HELP),
    identity: Path = typer.Option(None, "--identity", help=ADMIN_HELP),
    context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
) -> None:
    """Admit an identity (or approve another admin's proposal to admit it)."""
    payload = {"name": name, "role": role} | ({"site": site} if site else {})
    _admin_tx(connect, identity, context, "admit", payload=payload)


@ledger_app.command("revoke")
def revoke_cmd(
    name: str = typer.Argument(..., help="The identity to revoke."),
    connect: str = typer.Option(None, "--connect", help=CONNECT_HELP),
    identity: Path = typer.Option(None, "--identity", help=ADMIN_HELP),
    context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
) -> None:
    """Revoke an identity (or approve another admin's proposal to revoke it)."""
    _admin_tx(connect, identity, context, "revoke", payload={"name": name})


@ledger_app.command("contract-create")
def contract_create_cmd(
    name: str = typer.Argument(..., help="The training contract's name."),
    settings: str = typer.Option(
        "{}", "--settings", help="Its settings as JSON, e.g. '{\"min_peers\": 3}'."
    ),
    connect: str = typer.Option(None, "--connect", help=CONNECT_HELP),
    identity: Path = typer.Option(None, "--identity", help=ADMIN_HELP),
    context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
) -> None:
    """Create a training contract (or approve another admin's proposal to create it)."""
    try:
        payload = json.loads(settings)
    except ValueError as exc:
        _fail(f"--settings is not JSON: {exc}")
    if not isinstance(payload, dict):
        _fail("--settings must be a JSON object of contract settings")
    _admin_tx(connect, identity, context, "contract_create", contract=name, payload=payload)


@ledger_app.command("proposals")
def proposals_cmd(
    connect: str = typer.Option(None, "--connect", help=CONNECT_HELP),
    identity: Path = typer.Option(None, "--identity", help=IDENTITY_HELP),
    context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
) -> None:
    """Admin changes that wait for more approvals (with an admin quorum above 1)."""
    from openswarm.ledger.client import LedgerError

    try:
        with _client(connect, identity, context) as client:
            state = client.state()
    except LedgerError as exc:
        _fail(str(exc))
    quorum, pending = state.get("admin_quorum", 1), state.get("proposals") or {}
    typer.echo(f"admin quorum {quorum}; {len(pending)} pending proposal(s)")
    for digest, proposal in pending.items():
        what = json.dumps(proposal["payload"], sort_keys=True)
        where = f" {proposal['contract']}" if proposal["contract"] else ""
        approvers = proposal["approvers"]
        typer.echo(
            f"{digest[:12]}… {proposal['type']}{where} {what}  approved by "
            f"{', '.join(approvers)} ({len(approvers)}/{quorum})"
        )


def _admin_tx(
    connect: str | None,
    identity: Path | None,
    context: str | None,
    tx_type: str,
    *,
    contract: str = "",
    payload: dict,
) -> None:
    """Sign and submit an admin transaction; say what it did, or what it still waits for."""
    from openswarm.ledger.client import LedgerError

    try:
        with _client(connect, identity, context) as client:
            outcome = client.submit(tx_type, contract=contract, payload=payload)
    except LedgerError as exc:
        _fail(str(exc))
    if not outcome.applied:
        _fail(f"{tx_type} refused: {outcome.reason}")
    for event in (outcome.result or {}).get("events", []):
        typer.echo(describe_admin_event(event))


def describe_admin_event(event: dict[str, Any]) -> str:
    """One line for an admin transaction's event: what changed, or what a proposal awaits."""
    if event["kind"] in ("proposed", "approved"):
        left = event["needed"] - len(event["approvers"])
        return (
            f"proposal {event['proposal'][:12]}… ({event['type']}) awaits {left} more admin "
            f"approval(s); approved so far by {', '.join(event['approvers'])}. Other admins "
            "approve it by sending the same command."
        )
    details = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("kind", "approvers"))
    approvers = event.get("approvers")
    by = f" (approved by {', '.join(approvers)})" if approvers else ""
    return f"{event['kind']}: {details}{by}"


@ledger_app.command("archive")
def archive_cmd(
    connect: str = typer.Option(
        None, "--connect", help="HOST:PORT of EVERY ledger node (default: the context's)."
    ),
    identity: Path = typer.Option(None, "--identity", help=ADMIN_HELP),
    context: str = typer.Option(None, "--context", help=CONTEXT_HELP),
    keep: int = typer.Option(0, "--keep", help="Positions (etcd revisions) to leave in etcd."),
) -> None:
    """Drop records every node holds in its chain from etcd; compact and defragment it."""
    from openswarm.ledger.archive import archive
    from openswarm.ledger.client import LedgerError

    try:
        with _client(connect, identity, context) as client:
            done = archive(client, keep=keep)
    except LedgerError as exc:
        _fail(str(exc))
    before, after = sum(done["before"].values()), sum(done["after"].values())
    typer.echo(
        f"archived up to position {done['upto']}: {done.get('deleted', 0)} records dropped "
        f"from etcd; database {before / 1e6:.1f} MB → {after / 1e6:.1f} MB (all members)"
    )


@ledger_app.command("catch-up")
def catch_up_cmd(
    config: Path = typer.Option(..., "--config", help="The (stopped) node's YAML config."),
    source: str = typer.Option(..., "--from", help="HOST:PORT of a running ledger node."),
) -> None:
    """Fill a new node's empty data folder from another node's signed chain."""
    from openswarm.ledger.catchup import CatchUpError, catch_up
    from openswarm.ledger.client import LedgerError
    from openswarm.ledger.config import ConfigError, LedgerConfig
    from openswarm.pki import Identity, PkiError

    try:
        loaded = LedgerConfig.load(config)
        done = catch_up(loaded.data_dir, Identity.load(loaded.identity), source)
    except (CatchUpError, LedgerError, ConfigError, PkiError, OSError) as exc:
        _fail(str(exc))
    typer.echo(
        f"copied {done['height'] + 1} blocks up to position {done['position']} (head signed by "
        f"{done['signed_by']}); start the node: it verifies them, then follows etcd"
    )


@ledger_app.command("backup")
def backup_cmd(
    config: Path = typer.Option(..., "--config", help="The node's YAML config."),
    out: Path = typer.Option(..., "--out", help="A new folder for the backup."),
) -> None:
    """Back up a node's chain and signed head, plus a snapshot of its etcd member."""
    from openswarm.ledger.catchup import CatchUpError, backup
    from openswarm.ledger.config import ConfigError, LedgerConfig
    from openswarm.ledger.etcd_client import EtcdClient, EtcdError
    from openswarm.pki import Identity, PkiError

    try:
        loaded = LedgerConfig.load(config)
        snapshot = None
        if loaded.etcd is not None:
            ident = Identity.load(loaded.etcd.identity or loaded.identity)
            client = EtcdClient(list(loaded.etcd.endpoints), ident, timeout_s=30)
            snapshot = b"".join(client.snapshot(0))
            client.close()
        manifest = backup(loaded.data_dir, out, etcd_snapshot=snapshot)
    except (CatchUpError, ConfigError, PkiError, EtcdError, OSError) as exc:
        _fail(str(exc))
    extra = " and etcd.snapshot" if snapshot is not None else ""
    typer.echo(f"backed up {manifest['height'] + 1} blocks{extra} → {out}")


@ledger_app.command("restore")
def restore_cmd(
    source: Path = typer.Option(..., "--from", help="A folder made by 'ledger backup'."),
    config: Path = typer.Option(..., "--config", help="The (stopped) node's YAML config."),
) -> None:
    """Put a backed-up chain into a node's empty data folder (etcd: see docs/ledger.md)."""
    from openswarm.ledger.catchup import CatchUpError, restore
    from openswarm.ledger.config import ConfigError, LedgerConfig

    try:
        manifest = restore(source, LedgerConfig.load(config).data_dir)
    except (CatchUpError, ConfigError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"restored {manifest['height'] + 1} blocks; start the node to verify and resume")

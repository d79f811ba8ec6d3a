"""Command line: argument parsing, error-to-exit-code mapping, and calls into the service.

Exit codes: 0 success; 1 ``check-config`` found problems (in either file, or between the two
failover partners with ``--partner``), or the service / store failed;
2 the configuration given to ``serve`` or ``leases`` is invalid (or bad usage).
``status`` and ``partner-down`` (the running server's control socket): 1 the server refused
(no failover, or partner-down not possible in its state); 2 the configuration is invalid or
the control socket cannot be reached.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tandem import __version__
from tandem.config import (
    Config,
    check_partners,
    failover_subnets,
    load,
    pool_address_count,
    relationship_config,
    relationships,
    shared_relationships,
)
from tandem.errors import ConfigError, StoreError
from tandem.leases.model import Lease

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_BAD_CONFIG = 2
EXIT_UNREACHABLE = 2

app = typer.Typer(
    name="tandem",
    help="Tandem: a DHCPv4 server built for failover.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _print_version(value: bool) -> None:
    if value:
        from tandem.build import describe

        typer.echo(f"tandem {__version__} ({describe()})")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Tandem: a DHCPv4 server built for failover."""


def _load_or_exit(path: Path, code: int, err: bool) -> Config:
    """Load the config, or print every problem (prefixed by the file name) and exit."""
    try:
        return load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(f"{path}: {problem}", err=err)
        raise typer.Exit(code) from None


ConfigOption = Annotated[
    Path,
    typer.Option("-c", "--config", help="Configuration file (TOML).", show_default=False),
]


@app.command()
def serve(
    config: ConfigOption,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", case_sensitive=False, help="Log threshold.")
    ] = LogLevel.info,
) -> None:
    """Run the DHCP server until SIGINT/SIGTERM."""
    cfg = _load_or_exit(config, EXIT_BAD_CONFIG, err=True)
    from tandem import service
    from tandem.log import LOGGER_NAME, setup_logging

    level = getattr(logging, log_level.value.upper())
    setup_logging(level)  # a handler on stderr, unless logging is configured already
    logging.getLogger(LOGGER_NAME).setLevel(level)  # the threshold applies either way
    raise typer.Exit(service.run(cfg))


@app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="Configuration file (TOML).", show_default=False)],
    partner: Annotated[
        Path | None,
        typer.Option(
            "--partner",
            help="The failover partner's configuration file: validate it too, then report "
            "every relationship setting the two files must agree on and do not.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Validate a configuration file and list every problem in it."""
    if partner is None:
        cfg = _load_or_exit(file, EXIT_PROBLEMS, err=False)
        typer.echo(f"OK: {_summary(cfg)}")
        return
    configs: list[Config] = []
    for path in (file, partner):
        try:
            configs.append(load(path))
        except ConfigError as exc:
            for problem in exc.problems:
                typer.echo(f"{path}: {problem}")
    if len(configs) != 2:
        raise typer.Exit(EXIT_PROBLEMS)
    a, b = configs
    mismatches = check_partners(a, b, names=(str(file), str(partner)))
    for line in mismatches:
        typer.echo(line)
    if mismatches:
        raise typer.Exit(EXIT_PROBLEMS)
    for fa, fb in shared_relationships(a, b):  # check_partners found at least one
        typer.echo(
            f"OK: {file} ({fa.role}) and {partner} ({fb.role}) are partners in "
            f'"{fa.name}" ({fa.mode}, {_shared_summary(relationship_config(a, fa))})'
        )


def _plural(n: int, word: str, suffix: str = "s") -> str:
    return f"{n} {word}{suffix if n != 1 else ''}"


def _shared_summary(cfg: Config) -> str:
    shared = failover_subnets(cfg)
    addresses = sum(pool_address_count(cfg.subnets[i]) for i in shared)
    return f"{_plural(len(shared), 'shared subnet')}, {_plural(addresses, 'pool address', 'es')}"


def _summary(cfg: Config) -> str:
    addresses = sum(pool_address_count(s) for s in cfg.subnets)
    text = f"{_plural(len(cfg.subnets), 'subnet')}, {_plural(addresses, 'pool address', 'es')}"
    for fo in relationships(cfg):
        view = relationship_config(cfg, fo)
        text += f'; failover "{fo.name}" as {fo.role} ({fo.mode}, {_shared_summary(view)})'
    return text


# ---- leases


def _hex(data: bytes | None) -> str:
    return ":".join(f"{b:02x}" for b in data) if data else ""


def _local(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts > 0 else ""


def _duration(seconds: float) -> str:
    s = math.ceil(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    clock = f"{hours}:{minutes:02d}:{s:02d}"
    return f"{days}d {clock}" if days else clock


def _lease_json(lease: Lease, now: float) -> dict[str, Any]:
    return {
        "address": str(lease.address),
        "subnet_id": lease.subnet_id,
        "state": lease.state.name.lower(),
        "mac": _hex(lease.hwaddr),
        "htype": lease.htype,
        "client_id": _hex(lease.client_id) or None,
        "hostname": lease.hostname,
        "starts": lease.start,
        "ends": lease.end,
        "cltt": lease.cltt,
        "remaining_s": max(0, math.ceil(lease.end - now)),
    }


def _lease_table(leases: list[Lease], now: float, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for name in ("address", "state", "MAC", "client-id", "hostname", "starts", "ends"):
        table.add_column(name, no_wrap=True)
    table.add_column("remaining", justify="right", no_wrap=True)
    for lease in leases:
        table.add_row(
            str(lease.address),
            lease.state.name.lower(),
            _hex(lease.hwaddr),
            _hex(lease.client_id),
            lease.hostname or "",
            _local(lease.start),
            _local(lease.end),
            _duration(lease.end - now) if lease.end > now else "-",
        )
    return table


@app.command()
def leases(
    config: ConfigOption,
    show_all: Annotated[
        bool, typer.Option("--all", help="Every lease in the store, not only active ones.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """Show the leases in the store (active ones by default), sorted by address."""
    cfg = _load_or_exit(config, EXIT_BAD_CONFIG, err=True)
    from tandem.store import open_store

    if not Path(cfg.store.path).exists():
        # Do not create an empty store just to look at it.
        typer.echo(f"no lease store at {cfg.store.path} (has the server run yet?)", err=True)
        raise typer.Exit(EXIT_PROBLEMS)
    now = time.time()
    try:
        store = open_store(cfg.store)
        try:
            rows = store.load()
        finally:
            store.close()
    except StoreError as exc:
        typer.echo(f"cannot read the lease store {cfg.store.path}: {exc}", err=True)
        raise typer.Exit(EXIT_PROBLEMS) from None
    if not show_all:
        rows = [lease for lease in rows if lease.is_active(now)]
    rows.sort(key=lambda lease: int(lease.address))
    if as_json:
        typer.echo(json.dumps([_lease_json(lease, now) for lease in rows], indent=2))
        return
    if not rows:
        typer.echo("no leases" if show_all else "no active leases")
        return
    # Not a terminal (pipe, test): do not squeeze the table into 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False)
    what = "leases" if show_all else "active leases"
    console.print(_lease_table(rows, now, f"{len(rows)} {what}"), markup=False)


# ---- control socket (status, partner-down)


def _control(cfg: Config, command: str, **args: Any) -> dict[str, Any]:
    """One request to the running server, or a clear message and exit 2."""
    from tandem.api.control import ControlUnreachable, request

    path = cfg.server.control_socket
    if not path:
        typer.echo("server.control_socket is empty in this configuration: no control socket",
                   err=True)
        raise typer.Exit(EXIT_UNREACHABLE)
    try:
        return request(path, command, **args)
    except ControlUnreachable as exc:
        typer.echo(f"{exc} (is `tandem serve -c` running with this configuration?)", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from None


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    ago = now - ts
    rel = f"{_duration(ago)} ago" if ago >= 0 else f"in {_duration(-ago)}"
    return f"{_local(ts)} ({rel})"


def _status_text(reply: dict[str, Any]) -> list[str]:
    now = float(reply.get("now", time.time()))
    leases = reply.get("leases", {})
    lines = [f"leases: {leases.get('active', 0)} active, {leases.get('known', 0)} known"]
    fo = reply.get("failover")
    rels = reply.get("relationships") or ([fo] if fo is not None else [])
    if not rels:
        lines.append("failover: none (standalone server)")
    for fo in rels:
        standby = {"primary": "active", "secondary": "standby"}.get(fo["role"], "")
        role = f"{fo['role']} ({standby})" if fo["mode"] == "hot-standby" else fo["role"]
        lines += [
            f'failover "{fo["name"]}": {role}, {fo["mode"]}, MCLT {fo["mclt_s"]} s',
            f"  state:    {fo['state']} since {_when(fo['since'], now)}",
            f"  partner:  {fo['partner_state'] or 'unknown'}, "
            f"{'connected' if fo['connected'] else 'not connected'}",
            f"  serving:  {fo['service']}",
            f"  reserve:  {fo['reserve']['free']} free, {fo['reserve']['backup']} backup",
        ]
        if fo.get("clock_skew_s") is not None:
            lines.append(f"  clock:    partner {fo['clock_skew_s']:+.1f} s "
                         f"(limit {fo.get('max_clock_skew_s', '?')} s)")
        if len(rels) > 1 and fo.get("subnets") is not None:
            lines.append("  subnets:  " + ", ".join(str(s) for s in fo["subnets"]))
        if fo.get("all_free_usable_at") is not None:
            lines.append(f"  whole pool usable from {_when(fo['all_free_usable_at'], now)}")
        if fo.get("startup_waiting_since") is not None:
            lines.append(f"  WAITING  for the partner since "
                         f"{_when(float(fo['startup_waiting_since']), now)}: serving no one; "
                         "if the partner is really down, run `tandem partner-down`")
        sw = fo.get("state_write")
        if isinstance(sw, dict) and not sw.get("ok", True):
            lines.append(f"  ALARM {sw.get('alarm')} since "
                         f"{_when(float(sw.get('failing_since') or now), now)}: "
                         f"{sw.get('error')} (not entering {sw.get('pending') or '-'}; "
                         "retrying)")
    store = reply.get("store")
    if isinstance(store, dict) and not store.get("ok", True):
        lines.append(f"store:    ALARM {store.get('alarm')} since "
                     f"{_when(float(store.get('failing_since') or now), now)}: "
                     f"{store.get('error')} ({store.get('uncommitted_leases')} leases "
                     "uncommitted, ACKs withheld)")
    counters = reply.get("counters", {})
    lines.append("counters: " + ", ".join(f"{k} {v}" for k, v in counters.items()))
    if reply.get("build"):
        lines.append(f"build:    {reply['build']}")
    return lines


@app.command()
def status(
    config: ConfigOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print the server's JSON reply.")] = False,
) -> None:
    """Show the running server's state: failover state, reserve, leases, counters."""
    cfg = _load_or_exit(config, EXIT_BAD_CONFIG, err=True)
    reply = _control(cfg, "status")
    if as_json:
        typer.echo(json.dumps(reply, indent=2))
    elif reply.get("ok"):
        for line in _status_text(reply):
            typer.echo(line)
    if not reply.get("ok"):
        typer.echo(f"error: {reply.get('error', 'unknown error')}", err=True)
        raise typer.Exit(EXIT_PROBLEMS)


@app.command("partner-down")
def partner_down(
    config: ConfigOption,
    force: Annotated[bool, typer.Option(
        "--force", help="Also while the partner is connected (both would serve the pool).")
    ] = False,
    relationship: Annotated[str | None, typer.Option(
        "--relationship", "-r",
        help="The failover relationship (its name) whose partner is down; needed when the "
        "server is in several.")
    ] = None,
) -> None:
    """Tell the running server that its failover partner is down (COMMUNICATIONS-INTERRUPTED
    -> PARTNER-DOWN). Only when the partner is really down: both would serve the same pool.
    Refused while the partner is connected, unless --force."""
    cfg = _load_or_exit(config, EXIT_BAD_CONFIG, err=True)
    args: dict[str, Any] = {"force": True} if force else {}
    if relationship is not None:
        args["relationship"] = relationship
    reply = _control(cfg, "partner-down", **args)
    if not reply.get("ok"):
        typer.echo(f"error: {reply.get('error', 'unknown error')}", err=True)
        if reply.get("state"):
            typer.echo(f"state: {reply['state']}")
        raise typer.Exit(EXIT_PROBLEMS)
    if reply.get("changed"):
        typer.echo(f"state: {reply['state']} (was {reply.get('previous')})")
    else:
        typer.echo(f"state: {reply['state']} (unchanged)")


def main() -> None:
    """Console entry point (``tandem``)."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

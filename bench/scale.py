#!/usr/bin/env python3
"""Scale benchmark: a Tandem store with many leases (default 1,000,000).

Measures, in network namespaces this script creates (everything is removed on exit):

1. **Startup**: time from ``tandem serve`` to owning UDP port 67 with N leases in its store
   (open + quick_check + load + engine), and the in-process split: ``store.load()`` vs
   ``Engine.load()``.
2. **Memory**: RSS of the running server with N leases minus the RSS of the same server
   with an empty store, per lease.
3. **Full partner sync**: a primary holding N leases in PARTNER-DOWN (it serves clients
   alone, as after losing its standby) and a blank standby that starts in RECOVER and asks
   for every binding (UPDREQALL). Time from the failover link coming up to the end of
   RECOVER (UPDDONE received, every binding committed; both from the standby's log), while
   perfdhcp keeps asking the primary for leases in bounded chunks: answered / sent from the
   standby's start to the end of RECOVER. At the end the standby's store is compared with
   the primary's.

With ``--results FILE`` (``make bench``: bench/RESULTS.md) the figures also go into that
markdown file as a section ``## Scale: N leases, BNDUPD window W``, replacing the section with
the same heading if there is one, so runs with other windows or sizes sit side by side.

The N leases live in a bulk subnet 10.0.0.0/12 whose pool is exactly those N addresses (no
free address, so no reserve traffic); they exist only as data in the stores and in BNDUPDs
on the failover veth. Clients (perfdhcp, a relay at 198.18.0.2) get addresses from
198.18.0.0/16 as in bench/dora.py. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import ipaddress
import json
import math
import os
import re
import shlex
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dora
from dora import (
    CLIENT_CPU,
    CLIENT_IP,
    FO_IP1,
    FO_IP2,
    HOST_IFACE,
    JANITOR,
    POOL_END,
    POOL_START,
    PREFIX,
    REPO_DIR,
    SECOND_SERVER_CPU,
    SERVER2_IP,
    SERVER_CPU,
    SERVER_IP,
    Topology,
    log,
    parse_perfdhcp,
    spawn,
    tail,
    udp_port_owned_by,
)

BULK_PREFIX = ipaddress.IPv4Network("10.0.0.0/12")
BULK_FIRST = int(BULK_PREFIX.network_address) + 1
STATE_LINE = re.compile(r"FAILOVER_STATE_CHANGED from=(\S+) to=(\S+)")

CONFIG = """\
[server]
interfaces = ["{iface}"]
server_id = "{server_ip}"
port = 67
control_socket = "{sock}"

[store]
path = "{store}"

[lease]
default_lease_time_s = 3600

[[subnets]]
id = 1
prefix = "{prefix}"
pools = [{{ start = "{pool_start}", end = "{pool_end}" }}]

[[subnets]]
id = 2
prefix = "{bulk_prefix}"
pools = [{{ start = "{bulk_start}", end = "{bulk_end}" }}]
{failover}"""

FAILOVER = """
[failover]
name = "tdm-bench-scale"
role = "{role}"
mode = "hot-standby"
listen_address = "{fo_ip}"
peer_address = "{peer_fo_ip}"
mclt_s = 3600
reserve_percent = 0
{extra}"""


def write_config(path: Path, store: Path, n: int, role: str | None, server_ip: str,
                 max_unacked: int | None = None) -> None:
    failover = ""
    if role is not None:
        fo, peer = (FO_IP1, FO_IP2) if role == "primary" else (FO_IP2, FO_IP1)
        extra = f"max_unacked_updates = {max_unacked}\n" if max_unacked else ""
        failover = FAILOVER.format(role=role, fo_ip=fo, peer_fo_ip=peer, extra=extra)
    path.write_text(CONFIG.format(
        iface=HOST_IFACE, server_ip=server_ip, sock=path.with_suffix(".sock"), store=store,
        prefix=PREFIX, pool_start=POOL_START, pool_end=POOL_END, bulk_prefix=BULK_PREFIX,
        bulk_start=ipaddress.IPv4Address(BULK_FIRST),
        bulk_end=ipaddress.IPv4Address(BULK_FIRST + max(n, 1) - 1), failover=failover,
    ))


def build_store(path: Path, n: int, partner_down: bool) -> float:
    """N ACTIVE leases (one client each) in the bulk subnet, committed in chunks; with
    ``partner_down`` the failover state PARTNER-DOWN is stored as if the standby had been
    lost. Each lease is one the lost standby had acknowledged, as a store written by Tandem
    holds it: tstp = the lease end (fractional, as the engine grants), tsfp = the PET the
    partner acknowledged, which travels in whole seconds (its floor). With a fractional tsfp
    (no Tandem store has one) every BNDACK of the sync would lower it and rewrite the lease.
    Returns the seconds it took."""
    from tandem.failover.peer import META_STATE_KEY
    from tandem.leases.model import BindingState, Lease
    from tandem.store.sqlite import SqliteLeaseStore
    from tandem.wire.failover import ServerState

    t0 = time.monotonic()
    now = time.time()
    store = SqliteLeaseStore(str(path))
    try:
        chunk = 50_000
        for base in range(0, n, chunk):
            batch = []
            for i in range(base, min(n, base + chunk)):
                batch.append(Lease(
                    ipaddress.IPv4Address(BULK_FIRST + i), 2, BindingState.ACTIVE,
                    hwaddr=b"\x02\x00" + i.to_bytes(4, "big"), start=now - 60,
                    end=now + 86_400, cltt=now - 60, tstp=now + 86_400,
                    tsfp=float(math.floor(now + 86_400)),
                ))
            store.commit(batch)
        if partner_down:
            store.set_meta(META_STATE_KEY, json.dumps(
                {"state": int(ServerState.PARTNER_DOWN), "since": now - 7200}))
    finally:
        store.close()
    return time.monotonic() - t0


def in_process_load(path: Path, conf: Path) -> dict[str, float]:
    """store.load() and Engine.load() timed in this process (no failover)."""
    import gc

    from tandem.config import load as load_config
    from tandem.dhcp.engine import Engine
    from tandem.store.sqlite import SqliteLeaseStore

    cfg = load_config(conf)
    t0 = time.perf_counter()
    store = SqliteLeaseStore(str(path))
    t1 = time.perf_counter()
    leases = store.load()
    t2 = time.perf_counter()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        engine = Engine(cfg)
        engine.load(leases, time.time())
    finally:
        if gc_was:
            gc.enable()
    t3 = time.perf_counter()
    store.close()
    del engine, leases
    return {"open_s": round(t1 - t0, 3), "store_load_s": round(t2 - t1, 3),
            "engine_load_s": round(t3 - t2, 3)}


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(ns: str, cpu: int, conf: Path, out: Path, log_level: str,
                 timeout_s: float, no_gc: bool = False) -> tuple[Any, float]:
    tandem = [str(REPO_DIR / ".venv" / "bin" / "tandem")]
    if no_gc:  # diagnosis: the same server with the cyclic garbage collector off
        tandem = [str(REPO_DIR / ".venv" / "bin" / "python"), "-c",
                  "import gc, sys; gc.disable(); from tandem.cli import main; sys.exit(main())"]
    t0 = time.monotonic()
    proc = spawn(ns, cpu, [*tandem, "serve", "-c", str(conf), "--log-level", log_level], out)
    while not udp_port_owned_by(ns, 67, proc.pid):
        if proc.poll() is not None:
            raise RuntimeError(f"tandem exited {proc.returncode}: {tail(out)}")
        if time.monotonic() - t0 > timeout_s:
            raise RuntimeError(f"not listening after {timeout_s} s: {tail(out)}")
        time.sleep(0.05)
    return proc, time.monotonic() - t0


def client_chunks(topo: Topology, work: Path, opts: argparse.Namespace, tag: str,
                  count: int, chunk_s: int) -> tuple[int, int, str]:
    """``count`` perfdhcp runs of ``chunk_s`` s: (DISCOVERs sent, ACKs received, command)."""
    sent = answered = 0
    argv = ["perfdhcp", "-4", "-g", "single", "-l", HOST_IFACE, "-r", str(opts.client_rate),
            "-R", "5000", "-p", str(chunk_s), "-n", str(opts.client_rate * chunk_s), "-d", "1"]
    for i in range(count):
        out = work / f"perfdhcp-{tag}-{i}.out"
        client = spawn(topo.hosts["cli"], CLIENT_CPU, argv, out)
        client.wait(timeout=chunk_s + 30)
        JANITOR.procs.pop(client.pid, None)
        parsed = parse_perfdhcp(out.read_text(errors="replace"))
        sent += int(parsed.get("do", {}).get("sent", 0))
        answered += int(parsed.get("ra", {}).get("received", 0))
    return sent, answered, " ".join(argv)


def store_bindings(path: Path) -> set[tuple[int, bytes]]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT address, hwaddr FROM leases WHERE state = 2").fetchall()
    finally:
        con.close()
    return {(int(a), bytes(h or b"")) for a, h in rows}


def log_time(out: Path, needle: str) -> float | None:
    """Epoch seconds of the first log line containing ``needle`` (Tandem's log format:
    ``YYYY-MM-DD HH:MM:SS,mmm LEVEL ...``, local time)."""
    try:
        text = out.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if needle in line:
            with contextlib.suppress(ValueError):
                stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                return stamp.timestamp()
    return None


def states(out: Path) -> list[tuple[str, str]]:
    try:
        return STATE_LINE.findall(out.read_text(errors="replace"))
    except OSError:
        return []


def measure(opts: argparse.Namespace, work: Path) -> dict[str, Any]:
    n = opts.leases
    res: dict[str, Any] = {"leases": n, "max_unacked_updates": opts.max_unacked or 100}
    primary_store = work / "primary.db"
    log(f"building a store with {n} leases")
    res["build_store_s"] = round(build_store(primary_store, n, partner_down=True), 1)
    res["store_mb"] = round(sum(p.stat().st_size for p in work.glob("primary.db*")) / 1e6, 1)

    conf_single = work / "single.toml"
    write_config(conf_single, primary_store, n, None, SERVER_IP)
    log("in-process load")
    res["in_process"] = in_process_load(primary_store, conf_single)

    topo = Topology.create(f"tdm-scale-{os.getpid()}")
    dora.pair_topology(topo)
    topo.add_host("cli", CLIENT_IP)

    # Baseline: the same configuration with an empty store.
    empty = work / "empty.db"
    conf_empty = work / "empty.toml"
    write_config(conf_empty, empty, n, None, SERVER_IP)
    proc, t_empty = start_server(topo.hosts["srv"], SERVER_CPU, conf_empty, work / "empty.log",
                                 "warning", 60)
    time.sleep(1.0)
    rss0 = rss_kib(proc.pid)
    JANITOR.stop(proc)
    res["startup_empty_s"] = round(t_empty, 2)
    res["rss_empty_mib"] = round(rss0 / 1024, 1)

    # The primary alone, N leases, PARTNER-DOWN: startup time and RSS.
    conf_p = work / "primary.toml"
    write_config(conf_p, primary_store, n, "primary", SERVER_IP, opts.max_unacked)
    log("starting the primary")
    primary, t_start = start_server(topo.hosts["srv"], SERVER_CPU, conf_p, work / "primary.log",
                                    "info", opts.startup_timeout, opts.primary_no_gc)
    time.sleep(1.0)
    rss = rss_kib(primary.pid)
    res["startup_s"] = round(t_start, 2)
    res["rss_mib"] = round(rss / 1024, 1)
    res["rss_per_lease_bytes"] = round((rss - rss0) * 1024 / max(n, 1))
    log(f"  startup {t_start:.1f} s, RSS {rss / 1024:.0f} MiB "
        f"({res['rss_per_lease_bytes']} B/lease)")
    if opts.skip_sync:
        return res
    # The failover machine starts in STARTUP (15 s without a partner, then back to the
    # stored PARTNER-DOWN); only then does the primary serve.
    t_su = time.monotonic()
    while not any(f == "STARTUP" for f, _t in states(work / "primary.log")):
        if primary.poll() is not None or time.monotonic() - t_su > 60:
            raise RuntimeError("the primary did not leave STARTUP: " + tail(work / "primary.log"))
        time.sleep(0.2)
    res["primary_states"] = states(work / "primary.log")
    # Control: the same client load against the primary alone, before the sync.
    if opts.client_rate > 0:
        sent, answered, _cmd = client_chunks(topo, work, opts, "control", 2, 2)
        res["clients_before_sync"] = {"sent": sent, "answered": answered,
                                      "answered_pct": round(100.0 * answered / sent, 2)
                                      if sent else None}

    # The blank standby: RECOVER, UPDREQALL, every binding, UPDDONE.
    conf_s = work / "standby.toml"
    standby_store = work / "standby.db"
    write_config(conf_s, standby_store, n, "secondary", SERVER2_IP, opts.max_unacked)
    log("starting the blank standby (full sync)")
    primary_cpu0 = cpu_s(primary.pid)
    t0 = time.monotonic()
    standby, _ = start_server(topo.hosts["srv2"], SECOND_SERVER_CPU, conf_s,
                              work / "standby.log", "info", 60)
    sent = answered = chunks = 0
    per_chunk: list[tuple[float, int, int]] = []  # (s since the standby started, sent, answered)
    chunk_s = 2
    done_at: float | None = None
    deadline = t0 + opts.max_sync_minutes * 60
    while time.monotonic() < deadline:
        if done_at is None and any(f == "RECOVER" for f, _t in states(work / "standby.log")):
            done_at = time.monotonic()
            # CPU per binding (the machine is shared: CPU time, not wall time, is the
            # comparable figure). Both include serving the clients; the standby's its
            # start-up with an empty store, the primary's the wait for the link.
            res["sync_cpu_s"] = {"primary": round(cpu_s(primary.pid) - primary_cpu0, 1),
                                 "standby": round(cpu_s(standby.pid), 1)}
        if done_at is not None:
            break
        if primary.poll() is not None or standby.poll() is not None:
            raise RuntimeError("a server died during the sync: "
                               + tail(work / "primary.log") + tail(work / "standby.log"))
        if opts.client_rate > 0:
            s_, a_, res["perfdhcp_command"] = client_chunks(topo, work, opts, f"sync-{chunks}",
                                                            1, chunk_s)
            sent += s_
            answered += a_
            chunks += 1
            per_chunk.append((round(time.monotonic() - t0, 1), s_, a_))
        else:
            time.sleep(0.5)
    res["standby_states"] = states(work / "standby.log")
    if done_at is None:
        res["sync_s"] = None
        res["sync_error"] = f"still in RECOVER after {opts.max_sync_minutes} min"
    else:
        res["standby_start_to_done_s"] = round(done_at - t0, 1)
        # From the standby's log: the link up (the primary redials with a backoff, so this
        # comes seconds after the standby starts) and the end of RECOVER (UPDDONE).
        up, end = log_time(work / "standby.log", "FAILOVER_LINK_UP"), log_time(
            work / "standby.log", "FAILOVER_STATE_CHANGED from=RECOVER ")
        if up is not None and end is not None and end > up:
            res["sync_s"] = round(end - up, 1)
            res["link_wait_s"] = round(done_at - t0 - (end - up), 1)
        else:
            res["sync_s"] = res["standby_start_to_done_s"]
        res["sync_bindings_per_s"] = round(n / max(res["sync_s"], 1e-9))
    res["clients_during_sync"] = {"sent": sent, "answered": answered, "chunks": chunks,
                                  "rate": opts.client_rate, "per_chunk": per_chunk,
                                  "answered_pct": round(100.0 * answered / sent, 2)
                                  if sent else None}
    res["primary_rss_after_mib"] = round(rss_kib(primary.pid) / 1024, 1)
    res["standby_rss_mib"] = round(rss_kib(standby.pid) / 1024, 1)
    time.sleep(1.0)
    JANITOR.stop(standby, timeout_s=60)
    JANITOR.stop(primary, timeout_s=60)
    prim, stby = store_bindings(primary_store), store_bindings(standby_store)
    bulk = {b for b in prim if BULK_FIRST <= b[0] < BULK_FIRST + n}
    served = prim - bulk  # leases the primary gave perfdhcp's clients meanwhile
    res["standby_store"] = {"primary_active": len(prim), "standby_active": len(stby),
                            "bulk_in_standby": len(bulk & stby), "bulk": len(bulk),
                            "standby_has_all_bulk": bulk <= stby,
                            "client_leases": len(served),
                            "client_leases_in_standby": len(served & stby)}
    return res


def _per(seconds: float | None, n: int) -> str:
    return "?" if seconds is None else f"{seconds * 1e6 / max(n, 1):.0f}"


def markdown(res: dict[str, Any]) -> str:
    ip = res.get("in_process", {})
    lines = [
        f"| figure | {res['leases']:,} leases |",
        "|---|---|",
        f"| store size (SQLite file + WAL) | {res.get('store_mb')} MB |",
        f"| startup: `tandem serve` to port 67 owned | {res.get('startup_s')} s "
        f"(empty store: {res.get('startup_empty_s')} s) |",
        f"| in process: store.load() / Engine.load() | {ip.get('store_load_s')} s / "
        f"{ip.get('engine_load_s')} s |",
        f"| RSS | {res.get('rss_mib')} MiB (empty store: {res.get('rss_empty_mib')} MiB) |",
        f"| RSS per lease | {res.get('rss_per_lease_bytes')} bytes |",
    ]
    if "sync_s" in res:
        c = res["clients_during_sync"]
        st = res.get("standby_store", {})
        cpu = res.get("sync_cpu_s", {})
        lines += [
            f"| full partner sync (failover link up to the standby's end of RECOVER) | "
            f"{res['sync_s']} s ({res.get('sync_bindings_per_s')} bindings/s; from the "
            f"standby's start {res.get('standby_start_to_done_s')} s) |",
            f"| CPU during the sync: primary / standby (window {res.get('max_unacked_updates')}) | "
            f"{cpu.get('primary')} / {cpu.get('standby')} s ("
            f"{_per(cpu.get('primary'), res['leases'])} / {_per(cpu.get('standby'), res['leases'])}"
            f" µs per binding) |",
            f"| clients during the sync (perfdhcp {c['rate']}/s in {c['chunks']} chunks) | "
            f"{c['answered']} answered / {c['sent']} sent ({c['answered_pct']} %) |",
            f"| same load on the primary alone, before the sync | "
            f"{res.get('clients_before_sync', {}).get('answered')} answered / "
            f"{res.get('clients_before_sync', {}).get('sent')} sent "
            f"({res.get('clients_before_sync', {}).get('answered_pct')} %) |",
            f"| standby store after the sync | {st.get('bulk_in_standby')} of "
            f"{st.get('bulk')} bindings (all: {st.get('standby_has_all_bulk')}); leases given "
            f"to clients meanwhile: {st.get('client_leases_in_standby')} of "
            f"{st.get('client_leases')} |",
            f"| RSS after the sync: primary / standby | {res.get('primary_rss_after_mib')} / "
            f"{res.get('standby_rss_mib')} MiB |",
        ]
    return "\n".join(lines)


# Targets of the scale issue: startup, RSS per lease, full partner sync with clients answered.
TARGET_STARTUP_S = 15.0
TARGET_RSS_PER_LEASE_B = 600
TARGET_SYNC_S = 60.0
TARGET_ANSWERED_PCT = 99.0


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets_line(res: dict[str, Any]) -> str:
    startup, rss = res.get("startup_s"), res.get("rss_per_lease_bytes")
    parts = [
        f"startup {startup} s (<= {TARGET_STARTUP_S:g} s): "
        + _met(startup is not None and startup <= TARGET_STARTUP_S),
        f"RSS per lease {rss} bytes (<= {TARGET_RSS_PER_LEASE_B}): "
        + _met(rss is not None and rss <= TARGET_RSS_PER_LEASE_B),
    ]
    if "clients_during_sync" not in res:
        parts.append("full partner sync: not measured (--skip-sync)")
    else:
        sync = res.get("sync_s")
        pct = res["clients_during_sync"].get("answered_pct")
        ok = (sync is not None and sync <= TARGET_SYNC_S and pct is not None
              and pct >= TARGET_ANSWERED_PCT)
        what = f"{sync} s" if sync is not None else f"none ({res.get('sync_error')})"
        clients = (f"{pct} % of the clients answered" if pct is not None
                   else "no client load (--client-rate 0)")
        parts.append(f"full partner sync {what} (<= {TARGET_SYNC_S:g} s) with {clients} "
                     f"(>= {TARGET_ANSWERED_PCT:g} %): {_met(ok)}")
    return "Targets: " + "; ".join(parts) + "."


def results_heading(res: dict[str, Any], opts: argparse.Namespace) -> str:
    """Identifies the run: another size or BNDUPD window gets a section of its own."""
    only = ", startup and memory only" if opts.skip_sync else ""
    return f"## Scale: {res['leases']:,} leases, BNDUPD window {res['max_unacked_updates']}{only}"


def results_section(res: dict[str, Any], opts: argparse.Namespace, argv: Sequence[str],
                    when: str, json_path: Path) -> list[str]:
    sync = "" if opts.skip_sync else (
        f" and the time of a full partner sync (a blank standby in RECOVER gets every binding "
        f"through UPDREQALL, window {res['max_unacked_updates']}) while perfdhcp clients "
        f"({opts.client_rate} DORA/s) keep asking the primary for leases")
    return [
        results_heading(res, opts),
        "",
        f"Measured by `bench/scale.py` (bench/README.md): the startup of `tandem serve` with "
        f"{res['leases']:,} leases in its SQLite store, its RSS per lease (minus the same "
        f"server with an empty store){sync}; targets: startup <= {TARGET_STARTUP_S:g} s, "
        f"<= {TARGET_RSS_PER_LEASE_B} bytes RSS per lease, sync <= {TARGET_SYNC_S:g} s with "
        f"the clients answered (>= {TARGET_ANSWERED_PCT:g} %).",
        "",
        markdown(res),
        "",
        targets_line(res),
        "",
        f"Run on {when} UTC in {res['elapsed_s']} s ({res['elapsed_s'] / 60:.1f} min), "
        f"{dora.tandem_revision()}; everything as JSON in `{json_path}` (not committed).",
        "",
        "```sh",
        ".venv/bin/python bench/scale.py " + shlex.join(argv),
        "```",
        "",
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--leases", type=int, default=1_000_000)
    p.add_argument("--client-rate", type=int, default=200,
                   help="perfdhcp DORA/s against the primary during the sync (0 = none)")
    p.add_argument("--max-unacked", type=int, default=None,
                   help="max_unacked_updates of both servers (the BNDUPD window each "
                        "advertises; default: the configuration default, 100)")
    p.add_argument("--max-sync-minutes", type=float, default=30.0)
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--skip-sync", action="store_true", help="startup and memory only")
    p.add_argument("--primary-no-gc", action="store_true",
                   help="diagnosis: run the primary with the cyclic GC disabled")
    p.add_argument("--nice", type=int, default=-20)
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--out", type=Path, default=dora.DEFAULT_OUT_DIR)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--results", type=Path, default=None, metavar="FILE",
                   help="also write the figures into this markdown file (e.g. "
                        "bench/RESULTS.md) as a section named after the number of leases and "
                        "the BNDUPD window, replacing the one of an earlier run")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(argv)
    dora.preflight()
    dora.NICE["value"] = opts.nice
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, dora._on_signal)
    atexit.register(JANITOR.cleanup)
    work = Path(tempfile.mkdtemp(prefix=f"tdm-scale-{os.getpid()}-", dir=opts.workdir))
    JANITOR.dirs.append(work)
    JANITOR.keep_dirs = opts.keep
    started = time.monotonic()
    try:
        res = measure(opts, work)
    finally:
        JANITOR.cleanup()
    res["elapsed_s"] = round(time.monotonic() - started, 1)
    report = markdown(res)
    now = dt.datetime.now(dt.UTC)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    opts.out.mkdir(parents=True, exist_ok=True)
    out_file = opts.out / f"scale-{stamp}.json"
    out_file.write_text(json.dumps({"argv": argv, "result": res, "markdown": report},
                                   indent=2))
    print(report)
    print(targets_line(res))
    print(f"\nJSON: {out_file}")
    if opts.results is not None:
        json_path = out_file.resolve()
        if json_path.is_relative_to(REPO_DIR):
            json_path = json_path.relative_to(REPO_DIR)
        dora.update_results(opts.results, results_section(res, opts, argv,
                                                          now.strftime("%Y-%m-%d %H:%M"),
                                                          json_path))
        print(f"report: {opts.results} ({results_heading(res, opts)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

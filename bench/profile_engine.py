#!/usr/bin/env python3
"""Where the time goes per DORA, without sockets: decode -> Engine.handle -> encode for a
DISCOVER and a REQUEST, plus the store commit of the ACKed lease, in this process.

It drives the real code of the service's burst path (``tandem.service.Server._on_burst``
does decode, ``engine.handle``, encode; the store thread does ``SqliteLeaseStore.commit``)
with perfdhcp-like traffic: relayed (giaddr 198.18.0.2), ``--clients`` distinct clients, each
doing DISCOVER/OFFER then REQUEST/ACK, ``--passes`` times (the first pass allocates, later
ones find the client's lease). Commits group ``--group`` leases per transaction, as the
group-commit window does at ~5,000 DORA/s. No network, no root.

    .venv/bin/python bench/profile_engine.py                  # split per stage, µs per DORA
    .venv/bin/python bench/profile_engine.py --cprofile 25    # + top 25 functions (cProfile)
    .venv/bin/python bench/profile_engine.py --pyinstrument   # + pyinstrument tree (if installed)

See docs/performance.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path

from tandem.config import load_text
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.leases.model import Lease
from tandem.service import _tune_gc
from tandem.store.sqlite import SqliteLeaseStore
from tandem.wire.dhcp import DhcpMessage, decode, encode

BENCH_DIR = Path(__file__).resolve().parent
SERVER_IP = IPv4Address("198.18.0.1")
RELAY_IP = IPv4Address("198.18.0.2")
OPT_MESSAGE_TYPE, OPT_REQUESTED_IP, OPT_SERVER_ID, OPT_PRL = 53, 50, 54, 55


def config_text(store: Path) -> str:
    text = (BENCH_DIR / "configs" / "tandem.toml").read_text()
    values = {"iface": "bench0", "server_ip": SERVER_IP, "store_path": store,
              "lease_time_s": 3600, "prefix": "198.18.0.0/16", "pool_start": "198.18.1.0",
              "pool_end": "198.18.255.254", "relay_ip": RELAY_IP, "control_socket": ""}
    from string import Template

    return Template(text).substitute({k: str(v) for k, v in values.items()})


def packet(mac: bytes, xid: int, mtype: int, requested: IPv4Address | None = None) -> bytes:
    opts = {OPT_MESSAGE_TYPE: bytes([mtype]), OPT_PRL: bytes([1, 3, 6, 15, 51, 54])}
    if requested is not None:
        opts[OPT_REQUESTED_IP] = requested.packed
        opts[OPT_SERVER_ID] = SERVER_IP.packed
    msg = DhcpMessage(op=1, hops=1, xid=xid, giaddr=RELAY_IP, chaddr=mac + bytes(10),
                      options=opts)
    return encode(msg, 576)


class Stages:
    def __init__(self) -> None:
        self.decode = self.engine = self.encode = self.store = 0.0
        self.store_cpu = 0.0  # CPU time of the commits (the rest of their wall time: fsync)
        self.doras = 0


def run(engine: Engine, store: SqliteLeaseStore, clients: int, passes: int, group: int,
        stages: Stages) -> None:
    rx = RxInfo(src_ip=RELAY_IP, src_port=67, interface="bench0", local_ip=SERVER_IP)
    pc = time.perf_counter
    pending: list[Lease] = []
    now = time.time()
    discovers = [packet(i.to_bytes(6, "big"), i, 1) for i in range(1, clients + 1)]
    for p in range(passes):
        for i, raw in enumerate(discovers):
            now += 0.0002
            t0 = pc()
            msg = decode(raw)
            t1 = pc()
            out = engine.handle(msg, rx, now)
            t2 = pc()
            offer = out.replies[0].msg if out.replies else None
            if offer is not None:
                encode(offer, 576)
            t3 = pc()
            stages.decode += t1 - t0
            stages.engine += t2 - t1
            stages.encode += t3 - t2
            if offer is None:
                continue
            req = packet(msg.chaddr[:6], 10_000_000 * (p + 1) + i, 3, offer.yiaddr)
            t0 = pc()
            rmsg = decode(req)
            t1 = pc()
            out = engine.handle(rmsg, rx, now)
            t2 = pc()
            for reply in out.replies:
                encode(reply.msg, 576)
            t3 = pc()
            pending.extend(out.changed)
            if len(pending) >= group:
                c0 = time.thread_time()
                store.commit(pending)
                stages.store_cpu += time.thread_time() - c0
                pending = []
            t4 = pc()
            stages.decode += t1 - t0
            stages.engine += t2 - t1
            stages.encode += t3 - t2
            stages.store += t4 - t3
            stages.doras += 1
    if pending:
        t0, c0 = pc(), time.thread_time()
        store.commit(pending)
        stages.store += pc() - t0
        stages.store_cpu += time.thread_time() - c0


def summarize(path: Path, top: int) -> None:
    """Top frames of a py-spy ``--format raw`` file (collapsed stacks: ``a;b;c COUNT``):
    inclusive share (the frame is on the stack) and self share (it is the leaf)."""
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                  + ")" if " (" in f else f for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + n
    print(f"{path}: {total} samples")
    for title, table in (("inclusive", inclusive), ("self", leaf)):
        print(f"\n| {title} % | frame |\n|---|---|")
        for f, n in sorted(table.items(), key=lambda kv: -kv[1])[:top]:
            print(f"| {100 * n / max(total, 1):.1f} | `{f}` |")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--summarize", type=Path, default=None, metavar="RAW",
                    help="only summarize a py-spy --format raw file (bench/dora.py --py-spy)")
    ap.add_argument("--top", type=int, default=25, help="rows of --summarize")
    ap.add_argument("--clients", type=int, default=25_000)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--group", type=int, default=10,
                    help="leases per store transaction (group commit)")
    ap.add_argument("--cprofile", type=int, default=0, metavar="N",
                    help="also print the N most expensive functions (cProfile, cumulative)")
    ap.add_argument("--pyinstrument", action="store_true",
                    help="also print a pyinstrument call tree (pip install pyinstrument)")
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    opts = ap.parse_args(argv)
    if opts.summarize is not None:
        summarize(opts.summarize, opts.top)
        return 0
    _tune_gc()
    with tempfile.TemporaryDirectory(prefix="tdm-prof-", dir=opts.workdir) as tmp:
        cfg = load_text(config_text(Path(tmp) / "leases.db"))
        engine = Engine(cfg)
        engine.load([], time.time())
        store = SqliteLeaseStore(str(Path(tmp) / "leases.db"))
        stages = Stages()
        prof: cProfile.Profile | None = None
        pyi = None
        if opts.pyinstrument:
            from pyinstrument import Profiler  # type: ignore[import-not-found]

            pyi = Profiler(interval=0.0005)
            pyi.start()
        elif opts.cprofile:
            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        run(engine, store, opts.clients, opts.passes, opts.group, stages)
        wall = time.perf_counter() - t0
        if prof is not None:
            prof.disable()
        if pyi is not None:
            pyi.stop()
        store.close()
    n = max(stages.doras, 1)
    us = 1e6 / n
    total = stages.decode + stages.engine + stages.encode + stages.store
    print(f"{stages.doras} DORAs ({opts.clients} clients x {opts.passes} passes), "
          f"{opts.group} leases per commit; gc collections: {gc.get_count()}"
          + ("  (timings include profiler overhead)" if prof or pyi else ""))
    print("| stage (per DORA: DISCOVER + REQUEST) | µs | share |")
    print("|---|---|---|")
    for name, val in (("decode (wire -> DhcpMessage)", stages.decode),
                      ("Engine.handle", stages.engine),
                      ("encode (reply -> wire)", stages.encode),
                      ("SqliteLeaseStore.commit (store thread in the server)", stages.store)):
        print(f"| {name} | {val * us:.1f} | {100 * val / total:.0f} % |")
    print(f"| total | {total * us:.1f} | 100 % |")
    cpu = stages.decode + stages.engine + stages.encode + stages.store_cpu
    print(f"commit CPU time: {stages.store_cpu * us:.1f} µs per DORA (the rest of the commit "
          f"is waiting for fsync, off the event loop in the server); CPU per DORA: "
          f"{cpu * us:.1f} µs = at most {n / cpu:.0f} DORA/s per core before sockets, "
          "asyncio and logging")
    print(f"wall: {wall:.2f} s = {wall * us:.1f} µs per DORA = "
          f"{n / wall:.0f} DORA/s for one core without sockets")
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(opts.cprofile)
        pstats.Stats(prof).sort_stats("tottime").print_stats(opts.cprofile)
    if pyi is not None:
        print(pyi.output_text(unicode=True, color=False, show_all=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Engine-only CPU cost of a new client's DISCOVER and REQUEST on a hot-standby primary in
NORMAL whose pool has a BACKUP reserve (the standby's), against a standalone server.

The reserve is created as the primary's rebalance does it (``Engine.apply`` FREE -> BACKUP of
the lowest addresses), then ``--clients`` new relayed clients (bench/profile_engine.py's
packets) each DISCOVER, then each REQUEST. Prints CPU µs per message (best of ``--repeat``)
and how many times the policy was asked ``may_allocate`` per client. No network, no root, a
few seconds (docs/performance.md, "Address choice on a pair's primary").

    .venv/bin/python bench/alloc_primary.py                  # reserve 20 % of a /16 pool
    .venv/bin/python bench/alloc_primary.py --backup-pct 50
    .venv/bin/python bench/alloc_primary.py --standalone
"""

from __future__ import annotations

import argparse
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_engine import RELAY_IP, SERVER_IP, config_text, packet

from tandem.config import load_text
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.failover.bindings import Role
from tandem.failover.hot_standby import HotStandbyPolicy, StateView
from tandem.leases.model import BindingState, Lease
from tandem.wire.dhcp import decode
from tandem.wire.failover import ServerState


def one_run(backup_pct: float, clients: int, standalone: bool) -> tuple[float, float, float]:
    """(DISCOVER µs, REQUEST µs, may_allocate calls per client) of one fresh engine."""
    cfg = load_text(config_text(Path("/nonexistent/unused.db")))
    t0 = time.time()
    calls = 0
    if standalone:
        eng = Engine(cfg)
    else:
        view = StateView(ServerState.NORMAL, t0 - 10, ServerState.STARTUP)
        pol = HotStandbyPolicy(Role.PRIMARY, 3600, lambda: view)
        inner = pol.may_allocate

        def counted(lease: Lease, now: float) -> bool:
            nonlocal calls
            calls += 1
            return inner(lease, now)

        pol.may_allocate = counted  # type: ignore[method-assign]
        eng = Engine(cfg, pol)
    sn = eng.subnets.all[0]
    lo, hi = sn.pool.ranges[0]
    for a in range(lo, lo + int((hi - lo + 1) * backup_pct / 100)):
        eng.apply(Lease(IPv4Address(a), sn.id, BindingState.BACKUP), t0)
    rx = RxInfo(src_ip=RELAY_IP, src_port=67, interface="bench0", local_ip=SERVER_IP)
    discovers = [decode(packet(i.to_bytes(6, "big"), i, 1)) for i in range(1, clients + 1)]
    now = t0 + 1
    cpu = time.process_time
    offered: list[IPv4Address] = []
    c0 = cpu()
    for m in discovers:
        offered.append(eng.handle(m, rx, now).replies[0].msg.yiaddr)
    t_disc = cpu() - c0
    requests = [
        decode(packet(m.chaddr[:6], 10_000_000 + i, 3, y))
        for i, (m, y) in enumerate(zip(discovers, offered, strict=True))
    ]
    c0 = cpu()
    acks = sum(len(eng.handle(r, rx, now).replies) for r in requests)
    t_req = cpu() - c0
    if acks != clients:
        raise SystemExit(f"only {acks} of {clients} REQUESTs were ACKed")
    return t_disc / clients * 1e6, t_req / clients * 1e6, calls / clients


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backup-pct", type=float, default=20, help="reserve, %% of the pool")
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--standalone", action="store_true", help="no failover policy")
    a = ap.parse_args(argv)
    runs = [one_run(a.backup_pct, a.clients, a.standalone) for _ in range(a.repeat)]
    disc = min(r[0] for r in runs)
    req = min(r[1] for r in runs)
    mode = "standalone" if a.standalone else f"primary, reserve {a.backup_pct:g} %"
    print(
        f"{mode}: DISCOVER {disc:.1f} µs, REQUEST {req:.1f} µs CPU per client; "
        f"may_allocate {runs[0][2]:.1f} per client ({a.clients} new clients, best of {a.repeat})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

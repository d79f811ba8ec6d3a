#!/usr/bin/env python3
"""How long the primary's pool scans block the loop for a big pool (docs/performance.md,
sessions 9 and 10).

Hot standby: ``FailoverPeer.reserve_counts()`` walks every pool address of the relationship
on entering NORMAL and every ``REBALANCE_INTERVAL_S`` in it, on the event loop. Load balance:
``FailoverPeer.balance_plan()`` does (the FREE/BACKUP split, and the moves the primary would
make). A primary holding ``--leases`` ACTIVE leases in a pool of ``--pool`` addresses (the
rest without a record, so FREE; with ``--backup-share`` that share of them BACKUP), built as
bench/sync_cpu.py builds it; prints the median wall time of the scan.

    .venv/bin/python bench/reserve_scan.py --leases 1000000 --pool 1000000
    .venv/bin/python bench/reserve_scan.py --mode load-balance --leases 0 --pool 1000000
    .venv/bin/python bench/reserve_scan.py --mode load-balance --leases 0 --pool 1000000 \
        --backup-share 0.5      # a balanced split: nothing to move, the steady state
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from ipaddress import IPv4Address

from sync_cpu import FIRST, _side, partner_down_store  # bench/ is sys.path[0] as a script

from tandem.leases.model import BindingState, Lease
from tandem.service import _tune_gc


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--leases", type=int, default=1_000_000)
    p.add_argument("--pool", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--mode", choices=("hot-standby", "load-balance"), default="hot-standby")
    p.add_argument("--backup-share", type=float, default=0.0,
                   help="share of the addresses without a lease that are BACKUP")
    opts = p.parse_args(argv)
    t0 = time.time()
    leases = min(opts.leases, opts.pool)
    store = partner_down_store(leases, t0)
    n_backup = int((opts.pool - leases) * opts.backup_share)
    if n_backup:
        store.commit(Lease(IPv4Address(FIRST + leases + i), 2, BindingState.BACKUP)
                     for i in range(n_backup))
    example = f"{opts.mode}-primary.toml"
    peer, _ = _side(example, opts.pool, store, t0)
    _tune_gc()  # as the service does after loading its store
    times = []
    result: dict[str, object] = {}
    for _ in range(opts.repeat):
        c = time.perf_counter()
        if opts.mode == "hot-standby":
            result = {"free_backup": peer.reserve_counts()}
        else:
            plan = peer.balance_plan()
            result = {"free_backup": (plan.free, plan.backup),
                      "moves": (len(plan.to_backup), len(plan.to_free))}
        times.append(time.perf_counter() - c)
    name = "reserve_counts_s_median" if opts.mode == "hot-standby" else "balance_plan_s_median"
    print(json.dumps({"mode": opts.mode, "pool": len(peer._pool), "leases": leases,
                      "backup": n_backup, **result,
                      name: round(statistics.median(times), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

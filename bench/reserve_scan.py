#!/usr/bin/env python3
"""How long the primary's reserve count blocks the loop for a big pool (docs/performance.md,
session 9).

``FailoverPeer.reserve_counts()`` walks every pool address of the relationship: on entering
NORMAL and every ``REBALANCE_INTERVAL_S`` in it, on the event loop. A primary holding
``--leases`` ACTIVE leases in a pool of ``--pool`` addresses (the rest without a record, so
FREE), built as bench/sync_cpu.py builds it; prints the median wall time of the count.

    .venv/bin/python bench/reserve_scan.py --leases 1000000 --pool 1000000
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from ipaddress import IPv4Address

from sync_cpu import FIRST, _side  # bench/ is sys.path[0] when run as a script

from tandem.failover.peer import META_STATE_KEY
from tandem.leases.model import BindingState, Lease
from tandem.sim import MemoryStore
from tandem.wire.failover import ServerState


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--leases", type=int, default=1_000_000)
    p.add_argument("--pool", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    opts = p.parse_args(argv)
    t0 = time.time()
    store = MemoryStore()
    store.set_meta(META_STATE_KEY, json.dumps({"state": int(ServerState.PARTNER_DOWN),
                                               "since": t0 - 10_000}))
    store.commit(Lease(IPv4Address(FIRST + i), 2, BindingState.ACTIVE,
                       hwaddr=b"\x02\x00" + i.to_bytes(4, "big"), start=t0 - 100,
                       end=t0 + 86_400, cltt=t0 - 100, tstp=t0 + 86_400,
                       tsfp=float(math.floor(t0 + 86_400)))
                 for i in range(min(opts.leases, opts.pool)))
    peer, _ = _side("hot-standby-primary.toml", opts.pool, store, t0)
    times = []
    counts = (0, 0)
    for _ in range(opts.repeat):
        c = time.perf_counter()
        counts = peer.reserve_counts()
        times.append(time.perf_counter() - c)
    print(json.dumps({"pool": len(peer._pool), "leases": opts.leases,
                      "free_backup": counts,
                      "reserve_counts_s_median": round(statistics.median(times), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

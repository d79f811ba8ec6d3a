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
import statistics
import sys
import time
from collections.abc import Sequence

from sync_cpu import _side, partner_down_store  # bench/ is sys.path[0] as a script


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--leases", type=int, default=1_000_000)
    p.add_argument("--pool", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    opts = p.parse_args(argv)
    t0 = time.time()
    store = partner_down_store(min(opts.leases, opts.pool), t0)
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

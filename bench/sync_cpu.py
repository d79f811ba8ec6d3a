#!/usr/bin/env python3
"""CPU per binding of a full partner sync without sockets (docs/performance.md, Scale).

A primary holding N ACTIVE leases in PARTNER-DOWN (in memory) and a blank standby in
RECOVER (committing to a real SQLite file in a temporary directory), wired back to back as
tests/unit/test_failover_bulk_sync.py wires them: every step's changes are committed before
its bytes are handed over. Prints each side's ``time.process_time()`` per binding: the
sans-I/O cost of the sync (no event loop, no TCP, no commits on the primary).

    .venv/bin/python bench/sync_cpu.py --leases 20000
    .venv/bin/python bench/sync_cpu.py --leases 20000 --profile standby   # cProfile one side
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tandem.config.validate import load_text
from tandem.dhcp.engine import Engine
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import META_STATE_KEY, FailoverPeer
from tandem.leases.model import BindingState, Lease
from tandem.sim import MemoryStore, build_engine
from tandem.store.sqlite import SqliteLeaseStore
from tandem.wire.failover import ServerState

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FIRST = int(IPv4Address("10.0.0.10"))


def _side(example: str, n: int, store: MemoryStore | SqliteLeaseStore,
          now: float) -> tuple[FailoverPeer, Engine]:
    cfg = load_text((EXAMPLES / example).read_text() + f"""
[[subnets]]
id = 2
prefix = "10.0.0.0/12"
pools = [{{ start = "{IPv4Address(FIRST)}", end = "{IPv4Address(FIRST + n - 1)}" }}]
lease_time_s = 600
""")
    engines: list[Engine] = []

    def make(policy: HotStandbyPolicy) -> Engine:
        if isinstance(store, MemoryStore):
            engines.append(build_engine(cfg, policy, store, now))
        else:
            engine = Engine(cfg, policy)
            engine.load(store.load(), now)
            engines.append(engine)
        return engines[-1]

    return FailoverPeer(cfg, store, now, make), engines[0]


def partner_down_store(n: int, t0: float) -> MemoryStore:
    """A primary's store: PARTNER-DOWN for long, ``n`` ACTIVE leases the lost standby had
    acknowledged, from the pool's first address on."""
    store = MemoryStore()
    store.set_meta(META_STATE_KEY, json.dumps({"state": int(ServerState.PARTNER_DOWN),
                                               "since": t0 - 10_000}))
    store.commit(Lease(IPv4Address(FIRST + i), 2, BindingState.ACTIVE,
                       hwaddr=b"\x02\x00" + i.to_bytes(4, "big"), start=t0 - 100,
                       end=t0 + 86_400, cltt=t0 - 100, tstp=t0 + 86_400,
                       tsfp=float(math.floor(t0 + 86_400)))  # acked: whole seconds
                 for i in range(n))
    return store


def run(n: int, profile: str | None) -> dict[str, Any]:
    t0 = time.time()
    pstore = partner_down_store(n, t0)
    now = t0
    primary, _ = _side("hot-standby-primary.toml", n, pstore, now)
    now += 20  # past the startup wait: PARTNER-DOWN again
    primary.handle_timer(now)
    with tempfile.TemporaryDirectory(prefix="tdm-sync-cpu-") as tmp:
        sstore = SqliteLeaseStore(str(Path(tmp) / "standby.db"))
        standby, _ = _side("hot-standby-standby.toml", n, sstore, now)
        standby.connection_made(now)
        primary.connection_made(now)
        cpu = {"primary": 0.0, "standby": 0.0}
        prof = cProfile.Profile() if profile else None

        def timed(side: str, fn: Callable[..., Any], *args: Any) -> Any:
            if prof is not None and side == profile:
                prof.enable()
            c = time.process_time()
            out = fn(*args)
            cpu[side] += time.process_time() - c
            if prof is not None and side == profile:
                prof.disable()
            return out

        def p_out() -> bytes:
            pstore.commit(primary.take_changed())
            pstore.commit(primary.take_lazy())
            return primary.data_to_send()

        def s_out() -> bytes:
            changed = standby.take_changed()
            if changed:
                sstore.commit(changed)
            return standby.data_to_send()

        steps = 0
        while steps < 50 * n + 10_000:  # bounded: a sync takes ~n / 50 steps
            steps += 1
            now += 0.001
            for name, peer in (("primary", primary), ("standby", standby)):
                due = peer.get_timer()
                if due is not None and due <= now:
                    timed(name, peer.handle_timer, now)
            p_data = timed("primary", p_out)
            s_data = timed("standby", s_out)
            if s_data:
                timed("primary", primary.receive_data, s_data, now)
            if p_data:
                timed("standby", standby.receive_data, p_data, now)
            if (standby.state is not ServerState.RECOVER and primary.stats.syncs_done
                    and not p_data and not s_data):
                break
        stored = len(sstore.load())
        sstore.close()
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return {"leases": n, "steps": steps, "standby_state": standby.state.name,
            "standby_stored": stored,
            "primary_us_per_binding": round(cpu["primary"] * 1e6 / n, 1),
            "standby_us_per_binding": round(cpu["standby"] * 1e6 / n, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--leases", type=int, default=20_000)
    p.add_argument("--profile", choices=("primary", "standby"), default=None)
    opts = p.parse_args(argv)
    res = run(opts.leases, opts.profile)
    print(json.dumps(res))
    return 0 if res["standby_stored"] >= opts.leases else 1


if __name__ == "__main__":
    sys.exit(main())

"""Real crashes, over and over: ``kill -9`` under perfdhcp load, checked from the wire.

1. One server, 20 crash cycles. perfdhcp (a relay at 203.0.113.2, as in test_crash.py)
   keeps asking at a modest rate for the whole run; the server is started on the same store,
   killed with SIGKILL after a seeded random 0.3-2 s, and started again, 20 times. One tshark
   capture on perfdhcp's side spans every cycle. At the end every (yiaddr, chaddr) ACK that
   reached the wire is ACTIVE in the store (the lease is an hour long: nothing expires) and
   no address was ACKed to two chaddrs at overlapping times.

2. A hot-standby pair (MCLT 30 s, lease 60 s, reserve 20 % of a /24 pool, as in
   test_failover_pair.py) under perfdhcp load, which broadcasts so both servers hear it.
   The primary is killed mid-load; the standby goes to COMMUNICATIONS-INTERRUPTED and
   answers new clients from its reserve (ACKs with its server id after the kill, only
   reserve addresses); no address is ACKed to two chaddrs at overlapping times by either
   server (from the capture on the client bridge); then the primary restarts, both reach
   NORMAL and both stores hold the same ACTIVE (address, MAC) bindings for unexpired leases.
"""

from __future__ import annotations

import contextlib
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .capture import ACK, OFFER, Capture, Pkt
from .conftest import require
from .netns import Lab, Netns, Proc, wait_for
from .servers import (
    Server,
    ServerSpec,
    StoredLease,
    SubnetSpec,
    TandemServer,
    make_server,
    server_kind,
)

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]

PERF_IP = "203.0.113.2"
STATE_LINE = re.compile(r"FAILOVER_STATE_CHANGED from=(\S+) to=(\S+)")


def _cpus() -> list[int]:
    import os

    return sorted(os.sched_getaffinity(0))


def perfdhcp(
    ns: Netns,
    name: str,
    server: str,
    *,
    rate: int,
    clients: int,
    exchanges: int,
    period_s: int,
    seed: int,
) -> Proc:
    """perfdhcp as a relay (giaddr = its own address), bounded in count and time."""
    argv = [
        "perfdhcp", "-4", "-g", "single", "-l", "eth0",
        "-r", str(rate), "-R", str(clients), "-n", str(exchanges), "-p", str(period_s),
        "-d", "2", "-s", str(seed), server,
    ]  # fmt: skip
    if shutil.which("taskset") and len(_cpus()) > 1:
        argv = ["taskset", "-c", str(_cpus()[-1]), *argv]
    return ns.spawn(name, *argv)


def acks_of(pkts: list[Pkt]) -> list[Pkt]:
    return [p for p in pkts if p.mtype == ACK and p.yiaddr not in ("", "0.0.0.0")]


def clashes(acks: list[Pkt]) -> list[str]:
    """Addresses ACKed to two different chaddrs whose [time, time + lease) overlap."""
    by_addr: dict[str, list[Pkt]] = {}
    for a in acks:
        assert a.lease_time is not None, a.short()
        by_addr.setdefault(a.yiaddr, []).append(a)
    out = []
    for addr, spans in by_addr.items():
        spans.sort(key=lambda p: p.time)
        for i, a in enumerate(spans):
            for b in spans[i + 1 :]:
                assert a.lease_time is not None and b.lease_time is not None
                if a.chaddr != b.chaddr and b.time < a.time + a.lease_time:
                    out.append(
                        f"{addr}: {a.chaddr} by {a.server_id} at {a.time:.3f} (+{a.lease_time}) "
                        f"and {b.chaddr} by {b.server_id} at {b.time:.3f}"
                    )
    return out


# --- 1. one server, kill -9 twenty times -------------------------------------------------

SERVER_IP = "192.0.2.1"
BENCH_NET = "198.18.0.0/16"
CYCLES = 20
SEED = 20261126
LOOP_RATE = 300
LOOP_CLIENTS = 4000  # fewer than the exchanges: clients come back across restarts
LOOP_BUDGET_S = 150  # perfdhcp's own bound (-p); the loop stops it long before


@dataclass
class LoopResult:
    packets: list[Pkt]
    leases_after_last_kill: list[StoredLease]
    leases_final: list[StoredLease]
    kill_times: list[float] = field(default_factory=list)
    acks_per_cycle: list[int] = field(default_factory=list)
    last_kill: float = 0.0
    elapsed_s: float = 0.0
    server: Server | None = None


@pytest.fixture(scope="module")
def loop(module_lab: Lab) -> LoopResult:
    require("perfdhcp")
    lab = module_lab
    lan = lab.netns("lan")
    lab.bridge(lan)
    srv = lab.netns("srv")
    lab.plug(lan, "br0", srv, address=f"{SERVER_IP}/24")
    srv.ip("route", "add", "203.0.113.0/24", "dev", "eth0")
    pf = lab.netns("perf")
    lab.plug(lan, "br0", pf, address=f"{PERF_IP}/24")
    pf.ip("route", "add", "192.0.2.0/24", "dev", "eth0")
    spec = ServerSpec(
        SERVER_IP,
        "eth0",
        (
            SubnetSpec("192.0.2.0/24", ("192.0.2.100", "192.0.2.199"), 3600),
            SubnetSpec(
                BENCH_NET, ("198.18.0.10", "198.18.255.250"), 3600, relay_addresses=(PERF_IP,)
            ),
        ),
    )
    server = make_server(srv, spec, lab.workdir)
    rng = random.Random(SEED)
    t0 = time.monotonic()
    cap = Capture(pf, "eth0", lab.workdir / "perf.pcapng", count_acks=True).start()
    load = perfdhcp(
        pf, "perfdhcp-loop", SERVER_IP, rate=LOOP_RATE, clients=LOOP_CLIENTS,
        exchanges=LOOP_RATE * LOOP_BUDGET_S, period_s=LOOP_BUDGET_S, seed=SEED,
    )  # fmt: skip
    res = LoopResult([], [], [], server=server)
    for _ in range(CYCLES):
        assert time.monotonic() - t0 < 140, f"crash loop too slow: {len(res.kill_times)} cycles"
        assert load.alive(), f"perfdhcp ended early:\n{load.tail()}"
        before = cap.acks_seen
        server.start()
        time.sleep(rng.uniform(0.3, 2.0))
        server.kill9()
        res.kill_times.append(time.time())
        res.acks_per_cycle.append(cap.acks_seen - before)
    res.last_kill = res.kill_times[-1]
    res.leases_after_last_kill = server.leases()  # offline: the server is dead
    # once more, then a clean stop: the store killed 20 times still opens and serves
    server.start()
    before = cap.acks_seen
    wait_for(lambda: cap.acks_seen > before + 50, 20, "ACKs after the last restart")
    load.stop()
    server.stop()
    res.packets = cap.stop()
    res.leases_final = server.leases()
    res.elapsed_s = time.monotonic() - t0
    return res


def _not_active(acks: list[Pkt], leases: list[StoredLease]) -> list[str]:
    stored = {(le.address, le.hwaddr): le.state for le in leases}
    bad = []
    for pair in sorted({(a.yiaddr, a.chaddr) for a in acks}):
        state = stored.get(pair)
        if state != "ACTIVE":
            bad.append(f"{pair[0]} ACKed to {pair[1]}: stored {state or 'nothing'}")
    return bad


def test_crash_loop_cycles_ran_under_load(loop: LoopResult) -> None:
    acks = acks_of(loop.packets)
    print(
        f"\ncrash loop: {len(loop.kill_times)} kill -9 cycles in {loop.elapsed_s:.1f} s, "
        f"{len(acks)} ACKs on the wire ({len({(a.yiaddr, a.chaddr) for a in acks})} distinct "
        f"(address, chaddr)), {len(loop.leases_final)} leases stored; "
        f"ACKs per cycle {loop.acks_per_cycle}"
    )
    assert len(loop.kill_times) == CYCLES
    # the kills landed while ACKs were flowing, not between bursts
    busy = [n for n in loop.acks_per_cycle if n > 0]
    assert len(busy) >= CYCLES - 2, loop.acks_per_cycle
    live = sum(1 for t in loop.kill_times if any(t - 0.5 <= a.time <= t for a in acks))
    assert live >= CYCLES // 2, f"only {live} kills had ACKs in the 0.5 s before"
    assert len(acks) >= 1000, len(acks)


def test_crash_loop_every_ack_active_after_last_kill(loop: LoopResult) -> None:
    acks = [a for a in acks_of(loop.packets) if a.time <= loop.last_kill]
    assert acks
    bad = _not_active(acks, loop.leases_after_last_kill)
    assert not bad, f"{len(bad)} of {len(acks)} ACKs not durable: {bad[:20]}"


def test_crash_loop_every_ack_active_at_the_end(loop: LoopResult) -> None:
    acks = acks_of(loop.packets)
    bad = _not_active(acks, loop.leases_final)
    assert not bad, f"{len(bad)} of {len(acks)} ACKs not durable: {bad[:20]}"
    # nothing was lost: the store only grew
    assert len(loop.leases_final) >= len(loop.leases_after_last_kill)


def test_crash_loop_no_address_acked_to_two_clients(loop: LoopResult) -> None:
    acks = acks_of(loop.packets)
    assert all(a.lease_time == 3600 for a in acks), {a.lease_time for a in acks}
    bad = clashes(acks)
    assert not bad, "\n".join(bad[:20])


# --- 2. a hot-standby pair, the primary killed mid-load ----------------------------------

LAN_IP = {"primary": "192.0.2.2", "secondary": "192.0.2.3"}
FO_IP = {"primary": "198.51.100.2", "secondary": "198.51.100.3"}
BOTH_IP = "192.0.2.254"  # held by both servers: perfdhcp's packets reach both
FO_PORT = 647
MCLT_S, LEASE_S, RESERVE_PERCENT = 30, 60, 20
PAIR_NET = "198.18.0.0/24"
PAIR_POOL = ("198.18.0.10", "198.18.0.249")  # 240 addresses
RESERVE = 240 * RESERVE_PERCENT // 100
PAIR_RATE = 8  # new clients per second: the reserve (48) lasts the whole outage window
PAIR_CLIENTS = 1_000_000  # every exchange a new client
BEFORE_KILL_S = 6.0
AFTER_KILL_S = 5.0


class PairServer(TandemServer):
    """``tandem serve`` in a hot-standby pair serving perfdhcp's relayed /24."""

    def __init__(self, ns: Netns, role: str, workdir: Path):
        self.role = role
        self.kind = role
        workdir.mkdir(parents=True, exist_ok=True)
        spec = ServerSpec(
            LAN_IP[role],
            "eth0",
            (SubnetSpec(PAIR_NET, PAIR_POOL, LEASE_S, relay_addresses=(PERF_IP,)),),
        )
        super().__init__(ns, spec, workdir)

    def render(self) -> str:
        partner = "secondary" if self.role == "primary" else "primary"
        return super().render() + "\n".join(
            [
                "",
                "[failover]",
                'name = "tdm-e2e-crash-pair"',
                f'role = "{self.role}"',
                'mode = "hot-standby"',
                f'listen_address = "{FO_IP[self.role]}"',
                f"listen_port = {FO_PORT}",
                f'peer_address = "{FO_IP[partner]}"',
                f"peer_port = {FO_PORT}",
                f"mclt_s = {MCLT_S}",
                f"reserve_percent = {RESERVE_PERCENT}",
                "",
            ]
        )

    def transitions(self, since_start: int = 1) -> list[tuple[str, str]]:
        out = []
        for n in range(since_start, self.starts + 1):
            log = self.ns.lab.workdir / f"server-{self.kind}-{n}.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            out += STATE_LINE.findall(text)
        return out

    def in_state(self, state: str, since_start: int = 1, skip: int = 0) -> bool:
        return any(to == state for _f, to in self.transitions(since_start)[skip:])

    def log_tails(self) -> str:
        return "\n".join(
            "\n".join(
                (self.ns.lab.workdir / f"server-{self.kind}-{n}.log")
                .read_text(errors="replace")
                .splitlines()[-15:]
            )
            for n in range(1, self.starts + 1)
        )


@dataclass
class PairResult:
    packets: list[Pkt] = field(default_factory=list)
    reserve: set[str] = field(default_factory=set)
    killed_at: float = 0.0
    reaped_at: float = 0.0
    interrupted_at: float = 0.0
    load_stopped_at: float = 0.0
    normal_again_at: float = 0.0
    final: dict[str, list[StoredLease]] = field(default_factory=dict)
    checked_at: float = 0.0
    perf_output: str = ""
    elapsed_s: float = 0.0
    failed: str = ""
    logs: str = ""


@pytest.fixture(scope="module")
def pair(module_lab: Lab) -> PairResult:
    require("perfdhcp")
    if server_kind() != "tandem":
        pytest.skip("the failover pair is a Tandem feature (TANDEM_E2E_SERVER=kea has none)")
    lab = module_lab
    t0 = time.monotonic()
    lan = lab.netns("plan")
    lab.bridge(lan)
    ns = {}
    for role in ("primary", "secondary"):
        ns[role] = lab.netns(role[:4])
        lab.plug(lan, "br0", ns[role], address=f"{LAN_IP[role]}/24")
        ns[role].ip("route", "add", "203.0.113.0/24", "dev", "eth0")
        ns[role].ip("addr", "add", f"{BOTH_IP}/32", "dev", "eth0")
    p, s = ns["primary"], ns["secondary"]
    p.ip("link", "add", "fo0", "type", "veth", "peer", "name", "fo0", "netns", s.name)
    for role, n in ns.items():
        n.ip("addr", "add", f"{FO_IP[role]}/24", "dev", "fo0")
        n.ip("link", "set", "fo0", "up")
    pf = lab.netns("pperf")
    lab.plug(lan, "br0", pf, address=f"{PERF_IP}/24")
    pf.ip("route", "add", "192.0.2.0/24", "dev", "eth0")
    # perfdhcp cannot broadcast (no SO_BROADCAST): it unicasts to an address both servers
    # hold, whose neighbour entry is the Ethernet broadcast, so both hear every packet
    # (what a relay with both servers as helper addresses achieves with two copies)
    pf.ip("neigh", "add", BOTH_IP, "lladdr", "ff:ff:ff:ff:ff:ff", "dev", "eth0", "nud", "permanent")
    servers = {role: PairServer(n, role, lab.workdir / role) for role, n in ns.items()}
    primary, standby = servers["primary"], servers["secondary"]
    res = PairResult()
    cap = Capture(lan, "br0", lab.workdir / "pair.pcapng").start()
    step = "start both servers"
    try:
        standby.start()
        primary.start()
        step = "both servers reach NORMAL"
        wait_for(lambda: primary.in_state("NORMAL") and standby.in_state("NORMAL"), 60, step)
        step = "the standby holds its reserve"

        def reserve() -> set[str] | None:
            got = {le.address for le in standby.leases() if le.state == "BACKUP"}
            return got if len(got) >= RESERVE else None

        res.reserve = wait_for(reserve, 20, step, interval=0.5)
        step = "perfdhcp load on the pair"
        period = int(BEFORE_KILL_S + AFTER_KILL_S + 20)
        load = perfdhcp(
            pf, "perfdhcp-pair", BOTH_IP, rate=PAIR_RATE, clients=PAIR_CLIENTS,
            exchanges=PAIR_RATE * period, period_s=period, seed=SEED,
        )  # fmt: skip
        time.sleep(BEFORE_KILL_S)
        assert load.alive(), f"perfdhcp ended early:\n{load.tail()}"
        step = "kill -9 the primary mid-load; the standby notices"
        n_before = len(standby.transitions())
        res.killed_at = time.time()  # SIGKILL goes now; the standby may notice at once
        primary.kill9()
        res.reaped_at = time.time()
        wait_for(lambda: standby.in_state("COMMUNICATIONS_INTERRUPTED", skip=n_before), 30, step)
        res.interrupted_at = time.time()
        time.sleep(AFTER_KILL_S)
        res.load_stopped_at = time.time()
        load.stop()
        res.perf_output = load.output()
        step = "restart the primary (same store); both back in NORMAL"
        n_before = len(standby.transitions())
        primary.start()
        wait_for(
            lambda: (
                primary.in_state("NORMAL", since_start=2)
                and standby.in_state("NORMAL", skip=n_before)
            ),
            60,
            step,
        )
        res.normal_again_at = time.time()
        step = "both stores read"
        # The standby's outage bindings reach the primary, and the primary's bindings the
        # standby never acknowledged reach the standby, in the reconnect's updates: read both
        # stores until they agree on unexpired ACTIVE bindings (bounded; on timeout the test
        # below reports the difference of the last read).

        def agreed() -> bool:
            res.checked_at = now = time.time()
            res.final = final = {role: srv.leases() for role, srv in servers.items()}
            act = {
                r: {(le.address, le.hwaddr) for le in final[r] if le.state == "ACTIVE"}
                for r in final
            }
            live = {
                r: {
                    (le.address, le.hwaddr)
                    for le in final[r]
                    if le.state == "ACTIVE" and float(str(le.raw["ends"])) > now + 2
                }
                for r in final
            }
            return live["primary"] <= act["secondary"] and live["secondary"] <= act["primary"]

        with contextlib.suppress(TimeoutError):
            wait_for(agreed, 20, step, interval=0.5)
    except Exception as exc:
        res.failed = f"{step}: {exc!r}"
    res.packets = cap.stop()
    for srv in servers.values():
        srv.stop()
    res.logs = "\n".join(f"--- {r}:\n{srv.log_tails()}" for r, srv in servers.items())
    res.elapsed_s = time.monotonic() - t0
    return res


def _ok(res: PairResult) -> None:
    if res.failed:
        pytest.fail(f"the pair scenario stopped at {res.failed}\n{res.logs}")


def test_pair_standby_serves_new_clients_from_reserve_after_kill(pair: PairResult) -> None:
    _ok(pair)
    acks = acks_of(pair.packets)
    before = [a for a in acks if a.time < pair.killed_at]
    after = [a for a in acks if a.time > pair.killed_at]
    late = [a for a in after if a.server_id == LAN_IP["primary"] and a.time > pair.reaped_at]
    assert not late, "ACKs from the primary after it died:\n" + "\n".join(a.short() for a in late)
    from_standby = [a for a in after if a.server_id == LAN_IP["secondary"]]
    print(
        f"\npair: {len(acks)} ACKs on the wire in {pair.elapsed_s:.1f} s; {len(before)} by "
        f"the primary before the kill, {len(from_standby)} by the standby after it "
        f"(COMMUNICATIONS-INTERRUPTED {pair.interrupted_at - pair.killed_at:.1f} s after the "
        f"kill; NORMAL again {pair.normal_again_at - pair.killed_at:.1f} s after it); "
        f"reserve {len(pair.reserve)}"
    )
    assert len(before) >= PAIR_RATE * BEFORE_KILL_S * 0.5, len(before)
    assert all(a.server_id == LAN_IP["primary"] for a in before), {a.server_id for a in before}
    standby_before = [
        p for p in pair.packets
        if p.mtype in (OFFER, ACK) and p.time < pair.killed_at
        and LAN_IP["secondary"] in (p.ip_src, p.server_id)
    ]  # fmt: skip
    assert not standby_before, "\n".join(p.short() for p in standby_before[:10])
    # perfdhcp kept getting ACKs: from the standby, new clients, addresses from its reserve
    assert len(from_standby) >= PAIR_RATE * AFTER_KILL_S * 0.5, len(from_standby)
    assert all(a.lease_time == MCLT_S for a in from_standby), {a.lease_time for a in after}
    outside = sorted({a.yiaddr for a in from_standby} - pair.reserve)
    assert not outside, f"the standby ACKed addresses outside its reserve: {outside}"
    # ... all through the outage window, not just a burst right after the kill
    assert min(a.time for a in from_standby) < pair.interrupted_at + 1.5
    assert max(a.time for a in from_standby) > pair.load_stopped_at - 1.5
    old = {a.chaddr for a in before}
    assert not [a for a in from_standby if a.chaddr in old], "expected only new clients"


def test_pair_no_address_acked_to_two_clients_at_once(pair: PairResult) -> None:
    _ok(pair)
    acks = acks_of(pair.packets)
    assert {a.server_id for a in acks} == set(LAN_IP.values()), {a.server_id for a in acks}
    bad = clashes(acks)
    assert not bad, "\n".join(bad[:20])


def test_pair_standby_bindings_reach_the_restarted_primary(pair: PairResult) -> None:
    _ok(pair)
    now = pair.checked_at

    def active(role: str, live_only: bool) -> set[tuple[str, str]]:
        return {
            (le.address, le.hwaddr)
            for le in pair.final[role]
            if le.state == "ACTIVE" and (not live_only or float(str(le.raw["ends"])) > now + 2)
        }

    p_live, s_live = active("primary", True), active("secondary", True)
    p_all = active("primary", False)
    assert s_live <= p_all, f"only the standby: {sorted(s_live - p_all)[:20]}"
    # every ACK on the wire whose lease has not ended is ACTIVE at the restarted primary
    wire = {
        (a.yiaddr, a.chaddr)
        for a in acks_of(pair.packets)
        if a.lease_time is not None and a.time + a.lease_time > now + 2
    }
    assert wire, "no unexpired lease left to compare"
    assert wire <= p_all, f"missing at the primary: {sorted(wire - p_all)[:20]}"
    print(f"\npair stores: {len(p_live)} / {len(s_live)} unexpired ACTIVE bindings")


def test_pair_primary_bindings_reach_the_standby_after_restart(pair: PairResult) -> None:
    _ok(pair)
    now = pair.checked_at
    p_live = {
        (le.address, le.hwaddr)
        for le in pair.final["primary"]
        if le.state == "ACTIVE" and float(str(le.raw["ends"])) > now + 2
    }
    s_all = {(le.address, le.hwaddr) for le in pair.final["secondary"] if le.state == "ACTIVE"}
    assert p_live <= s_all, f"only the primary: {sorted(p_live - s_all)[:20]}"
    wire = {
        (a.yiaddr, a.chaddr)
        for a in acks_of(pair.packets)
        if a.lease_time is not None and a.time + a.lease_time > now + 2
    }
    assert wire <= s_all, f"missing at the standby: {sorted(wire - s_all)[:20]}"

"""Deterministic simulation testing (DST) of a hot-standby failover pair.

One seed draws a whole run: the pair's timing (MCLT, lease), the clients, and a random
schedule of faults. Faults happen only in ``[0, fault_end)``; a quiet tail of several MCLTs
follows, in which nothing goes wrong. The run checks after every step:

* the simulator's safety invariants (no address leased to two clients at once, no ACKed
  lease forgotten; :mod:`tandem.sim.invariants`) and the MCLT bound (:class:`MCLTBound`);
* at the end (liveness, "no state without a way out"): both servers are up and in NORMAL,
  their committed stores agree on every ACTIVE binding, and every client holds an address.

Fault kinds (all derived from the seed, see :func:`make_schedule`):

``crash``            kill -9 of either server, restarted later (uncommitted changes lost)
``crash-uncommitted``  kill -9 at the first step after ``t`` at which the server has a
                     commit in flight (lease changes, ACKs and failover bytes waiting for it)
``crash+partner-down``  a crash during which the operator puts the survivor in
                     PARTNER-DOWN (only while the partner is really down; no failover-link
                     partition overlaps it: that would be operator error, see docs)
``link-partition``   the failover link carries nothing (bytes held back, TCP-like)
``lan-partition``    a server cut from some or all clients on the LAN
``link-noise``       failover bytes delayed (up to beyond tReceive), lost, duplicated,
                     reordered; TCP-like (loss = retransmission delay) or datagram-like
``store-fail``       a server's store raises on every commit for a while
``clock-skew``       one server's clock is ahead or behind by less than max_clock_skew_s
                     for the whole run
``clock-beyond``     one server's clock is ahead by more than max_clock_skew_s (the pair
                     must refuse to connect) until the operator steps it back
``client-reboot`` / ``client-release`` / ``client-decline``  what clients do (power cycle
                     with INIT-REBOOT, RELEASE then start again, DECLINE)

Each seed also draws each server's commit latency (a slow disk keeps more in flight), the
pool size (sometimes so small that addresses are reused between clients) and the client
profiles (RFC 2131, dhclient, udhcpc, dhcpcd).

Replay a seed: ``python -m tandem.sim.faults --seed N`` prints the schedule and the outcome
(the trace tail of a violation). ``--count N --workers W --time-limit S`` runs many seeds and
prints the counts; ``make soak`` (:mod:`tandem.sim.soak`) runs a range resumably and writes a
summary file.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from tandem.config.schema import Config
from tandem.config.validate import load_text
from tandem.dhcp.engine import Engine
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import FailoverPeer
from tandem.leases.model import BindingState
from tandem.leases.table import lease_key
from tandem.sim.client import DHCLIENT, DHCPCD, RFC2131, UDHCPC, ClientState, SimClient
from tandem.sim.invariants import InvariantViolation, MCLTBound
from tandem.sim.network import Faults, PeerLink
from tandem.sim.server import MemoryStore, SimServer, Stack, build_engine
from tandem.sim.world import Simulation
from tandem.wire.failover import ServerState

__all__ = [
    "KINDS",
    "KNOWN_BUGS",
    "DstRun",
    "Fault",
    "Schedule",
    "SeedResult",
    "main",
    "make_schedule",
    "pair_config",
    "run_schedule",
    "run_seed",
    "soak",
]

PRIMARY_IP = IPv4Address("192.0.2.2")
STANDBY_IP = IPv4Address("192.0.2.3")
MAX_SKEW_S = 60
KINDS = (
    "crash",
    "crash-uncommitted",
    "crash+partner-down",
    "link-partition",
    "lan-partition",
    "link-noise",
    "store-fail",
    "clock-skew",
    "clock-beyond",
    "client-reboot",
    "client-release",
    "client-decline",
)
_PROFILES = {p.name: p for p in (RFC2131, DHCLIENT, UDHCPC, DHCPCD)}
#: Seeds that fail because of a precisely known, not yet fixed bug: seed -> (a substring of
#: the first line of its failure, why). ``make soak`` (:mod:`tandem.sim.soak`) does not count
#: them as failures while they fail that way; ``tests/sim/test_dst.py`` keeps a
#: test that each still fails its known way.
KNOWN_BUGS: dict[int, tuple[str, str]] = {}

_CONFIG = """
[server]
server_id = "{me}"
interfaces = ["eth0"]

[store]
path = "/nonexistent/tandem-sim.db"

[[subnets]]
id = 1
prefix = "192.0.2.0/24"
pools = [{{ start = "192.0.2.100", end = "192.0.2.{last}" }}]
lease_time_s = {lease}

[failover]
name = "dst"
role = "{role}"
mode = "hot-standby"
listen_address = "{me}"
peer_address = "{partner}"
mclt_s = {mclt}
reserve_percent = 20
max_clock_skew_s = {skew}
"""


@functools.lru_cache(maxsize=64)
def pair_config(role: str, *, mclt_s: int, lease_s: int, pool_size: int) -> Config:
    """The configuration of one server of the simulated pair (cached: a :class:`Config` is
    frozen, and seeds draw only a few combinations)."""
    me, partner = (PRIMARY_IP, STANDBY_IP) if role == "primary" else (STANDBY_IP, PRIMARY_IP)
    text = _CONFIG.format(
        me=me,
        partner=partner,
        role=role,
        mclt=mclt_s,
        lease=lease_s,
        last=99 + pool_size,
        skew=MAX_SKEW_S,
    )
    return load_text(text, source=f"dst-{role}")


def failover_stack(config: Config, store: MemoryStore, now: float) -> Stack:
    """A :data:`~tandem.sim.server.StackFactory` for a failover server: the peer builds the
    engine around its policy and the committed leases are loaded (as service startup)."""
    engines: list[Engine] = []

    def make_engine(policy: HotStandbyPolicy) -> Engine:
        engines.append(build_engine(config, policy, store, now))
        return engines[-1]

    peer = FailoverPeer(config, store, now, make_engine)
    return Stack(engines[0], peer)


# ---------------------------------------------------------------------- schedules


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: ``kind`` on ``target`` from run time ``t`` for ``duration`` seconds;
    ``value`` and ``mode`` are kind-specific (clock offset, partner-down delay, noise)."""

    t: float
    kind: str
    target: str
    duration: float = 0.0
    value: float = 0.0
    mode: str = ""

    def text(self) -> str:
        extra = f" value={self.value:g}" if self.value else ""
        extra += f" mode={self.mode}" if self.mode else ""
        return f"t={self.t:9.3f} {self.kind:<19} {self.target:<6} for {self.duration:8.3f} s{extra}"


@dataclass(slots=True)
class Schedule:
    """Everything a seed decides about a run."""

    seed: int
    mclt_s: int
    lease_s: int
    clients: int
    client_starts: list[float]
    fault_end: float
    quiet_s: float
    pool_size: int = 100
    commit_s: dict[str, float] = field(default_factory=dict)
    profiles: list[str] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    clock: dict[str, float] = field(default_factory=dict)  # constant offsets from t=0

    @property
    def end(self) -> float:
        return self.fault_end + self.quiet_s

    def text(self) -> str:
        lines = [
            f"seed {self.seed}: MCLT {self.mclt_s} s, lease {self.lease_s} s, "
            f"{self.clients} clients, faults until {self.fault_end:.0f} s, "
            f"quiet until {self.end:.0f} s",
            f"  pool {self.pool_size} addresses; commit latency "
            + ", ".join(f"{k} {v * 1000:g} ms" for k, v in sorted(self.commit_s.items()))
            + "; clients " + " ".join(self.profiles),
        ]
        for name, off in sorted(self.clock.items()):
            lines.append(f"  clock of {name}: {off:+.3f} s from the start")
        lines.extend("  " + f.text() for f in self.faults)
        if not self.faults:
            lines.append("  (no faults)")
        return "\n".join(lines)


def make_schedule(seed: int) -> Schedule:
    """Draw the run of ``seed`` (a pure function of the seed)."""
    rng = random.Random(f"{seed}/dst-schedule")
    mclt = rng.choice((60, 120))
    lease = mclt * rng.choice((2, 4))
    clients = rng.randint(4, 10)
    fault_end = mclt * rng.uniform(6, 12)
    quiet = 5.0 * mclt + 120.0
    sched = Schedule(
        seed=seed,
        mclt_s=mclt,
        lease_s=lease,
        clients=clients,
        client_starts=[rng.uniform(0, fault_end * 0.7) for _ in range(clients)],
        fault_end=fault_end,
        quiet_s=quiet,
        pool_size=rng.choice((100, 100, 16)),
        commit_s={n: rng.choice((0.002, 0.002, 0.05, 0.5)) for n in ("p", "s")},
        profiles=[rng.choice(sorted(_PROFILES)) for _ in range(clients)],
    )
    servers = ("p", "s")
    faults: list[Fault] = []

    def window(max_len: float) -> tuple[float, float]:
        t = rng.uniform(0, fault_end - 1)
        return t, min(rng.uniform(0.5, max_len), fault_end - t)

    # Clock: usually right; sometimes one server off within the tolerance for the whole
    # run; sometimes ahead beyond it until the operator steps it back.
    r = rng.random()
    if r < 0.2:
        who = rng.choice(servers)
        off = rng.uniform(1, 0.9 * MAX_SKEW_S) * rng.choice((-1, 1))
        sched.clock[who] = off
        faults.append(Fault(0.0, "clock-skew", who, fault_end, off))
    elif r < 0.3:
        who = rng.choice(servers)
        off = rng.uniform(MAX_SKEW_S + 5, 10 * MAX_SKEW_S)
        sched.clock[who] = off
        fix = rng.uniform(0.1, 0.9) * fault_end
        faults.append(Fault(0.0, "clock-beyond", who, fix, off))

    n = rng.randint(1, 8)
    for _ in range(n):
        kind = rng.choices(
            ("crash", "crash-uncommitted", "crash+partner-down", "link-partition",
             "lan-partition", "link-noise", "store-fail", "client"),
            weights=(3, 3, 2, 3, 2, 3, 2, 3),
        )[0]
        who = rng.choice(servers)
        if kind in ("crash", "crash-uncommitted"):
            t, d = window(3 * mclt)
            faults.append(Fault(t, kind, who, d))
        elif kind == "client":
            t, d = window(mclt)
            what = rng.choice(("client-reboot", "client-release", "client-decline"))
            faults.append(Fault(t, what, f"c{rng.randrange(clients)}", d))
        elif kind == "crash+partner-down":
            t, d = window(6 * mclt)
            if d < 10:
                continue
            faults.append(Fault(t, kind, who, d, rng.uniform(1, min(d - 5, 2 * mclt))))
        elif kind == "link-partition":
            t, d = window(3 * mclt)
            faults.append(Fault(t, kind, "link", d))
        elif kind == "lan-partition":
            t, d = window(3 * mclt)
            part = rng.choice(("all", "some"))
            faults.append(Fault(t, kind, who, d, rng.randint(1, clients), part))
        elif kind == "link-noise":
            t, d = window(2 * mclt)
            mode = rng.choice(("stream", "stream", "datagram", "slow"))
            faults.append(Fault(t, kind, "link", d, rng.uniform(0.05, 0.5), mode))
        else:
            t, d = window(mclt)
            faults.append(Fault(t, kind, who, d))
    # The operator declares the partner down only while it is, and the partner must not run
    # again without talking to the server in PARTNER-DOWN (the operator's duty: the
    # restarted partner cannot know it was declared down): no failover-link partition and
    # no crash of the survivor from the declaration until the partner had time to reconnect.
    pds = [
        (f.t, f.t + f.duration + 60.0, "s" if f.target == "p" else "p")
        for f in faults
        if f.kind == "crash+partner-down"
    ]

    def allowed(f: Fault) -> bool:
        for a, b, survivor in pds:
            if not (f.t < b and a < f.t + f.duration):
                continue
            if f.kind == "link-partition":
                return False
            if f.kind.startswith("crash") and f.target == survivor:
                return False
        return True

    faults = [f for f in faults if allowed(f)]
    faults.sort(key=lambda f: (f.t, f.kind, f.target))
    sched.faults = faults
    return sched


# ---------------------------------------------------------------------- running


@dataclass(slots=True)
class SeedResult:
    """The outcome of one seed."""

    seed: int
    ok: bool
    failure: str = ""  # "" | "safety" | "liveness" | "error"
    message: str = ""
    injected: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    acks: int = 0

    def first_line(self) -> str:
        return self.message.splitlines()[0] if self.message else ""


class DstRun:
    """One run of a :class:`Schedule` (built, not yet run); ``trace=False``: without the
    trace (faster; the run is the same, only its messages lack the trace tail)."""

    def __init__(self, schedule: Schedule, *, trace: bool = True) -> None:
        self.schedule = schedule
        sc = schedule
        self.sim = sim = Simulation(sc.seed, trace=trace)
        self.injected: Counter[str] = Counter()
        self.p = sim.add_server(
            "p",
            PRIMARY_IP,
            pair_config("primary", mclt_s=sc.mclt_s, lease_s=sc.lease_s, pool_size=sc.pool_size),
            factory=failover_stack,
            commit_s=sc.commit_s.get("p", 0.002),
            start=False,
        )
        self.s = sim.add_server(
            "s",
            STANDBY_IP,
            pair_config(
                "secondary", mclt_s=sc.mclt_s, lease_s=sc.lease_s, pool_size=sc.pool_size
            ),
            factory=failover_stack,
            commit_s=sc.commit_s.get("s", 0.002),
            start=False,
        )
        for name, off in sc.clock.items():
            sim.servers[name].clock_offset = off
        self.p.start(sim.sched.now)
        self.s.start(sim.sched.now)
        self.link: PeerLink = sim.link_peers("p", "s")
        self.partner = {"p": self.s, "s": self.p}
        self.mclt = MCLTBound(self.partner, sc.mclt_s, sim.start)
        for srv in (self.p, self.s):
            srv.on_ack.append(self.mclt.ack_sent)
        sim.invariants.add_check("MCLT bound", self.mclt)
        profiles = sc.profiles or ["rfc2131"] * len(sc.client_starts)
        self.clients = [
            sim.add_client(f"c{i}", profile=_PROFILES[profiles[i]], start_at=t)
            for i, t in enumerate(sc.client_starts)
        ]
        for f in sc.faults:
            self._plan(f)

    # ------------------------------------------------------------------ faults

    def _plan(self, f: Fault) -> None:
        sim = self.sim
        end = f.t + f.duration
        if f.kind == "crash-uncommitted":
            srv = sim.servers[f.target]
            sim.at(f.t, lambda now: self._crash_when_uncommitted(srv, sim.start + end), f.kind)
            sim.at(end, lambda now: self._restart(srv, now), "restart")
        elif f.kind.startswith("client-"):
            c = sim.clients[f.target]
            sim.at(f.t, lambda now: self._client(c, f.kind, now), f.kind)
            sim.at(end, lambda now: self._client_back(c, now), "client back")
        elif f.kind in ("crash", "crash+partner-down"):
            srv = sim.servers[f.target]
            sim.at(f.t, lambda now: self._crash(srv, now, f.kind), f.kind)
            sim.at(end, lambda now: self._restart(srv, now), "restart")
            if f.kind == "crash+partner-down":
                other = self.partner[f.target]
                sim.at(f.t + f.value, lambda now: self._partner_down(other, now), "partner-down")
        elif f.kind == "link-partition":

            def part(now: float) -> None:
                self._count(f.kind)
                self.link.partition()

            sim.at(f.t, part, f.kind)
            sim.at(end, lambda now: self.link.heal(), "heal link")
        elif f.kind == "lan-partition":
            names = [c.name for c in self.clients]
            group = names if f.mode == "all" else names[: int(f.value)]

            def cut(now: float) -> None:
                self._count(f.kind)
                c = sim.lan.partition(group, [f.target], label=f.kind)
                sim.sched.at(sim.start + end, lambda now: sim.lan.heal(c), "heal lan")

            sim.at(f.t, cut, f.kind)
        elif f.kind == "link-noise":
            sim.at(f.t, lambda now: self._noise(f), f.kind)
            sim.at(end, lambda now: self._quiet_link(), "noise ends")
        elif f.kind == "store-fail":
            store = sim.servers[f.target].store

            def fail(now: float) -> None:
                self._count(f.kind)
                store.failing = True
                sim.note(f"store of {f.target} fails")

            def mend(now: float) -> None:
                store.failing = False
                sim.note(f"store of {f.target} works again")

            sim.at(f.t, fail, f.kind)
            sim.at(end, mend, "store mended")
        elif f.kind == "clock-skew":
            self._count(f.kind)
        elif f.kind == "clock-beyond":
            self._count(f.kind)
            srv = sim.servers[f.target]
            sim.at(end, lambda now: srv.set_clock(0.0, now), "clock stepped back")
        else:  # pragma: no cover - make_schedule draws only the kinds above
            raise ValueError(f"unknown fault kind {f.kind!r}")

    def _count(self, kind: str) -> None:
        self.injected[kind] += 1

    def _crash(self, srv: SimServer, now: float, kind: str) -> None:
        if srv.up:
            self._count(kind)
            srv.crash(now)

    def _crash_when_uncommitted(self, srv: SimServer, until: float) -> None:
        """Crash ``srv`` after the first step (before ``until``) that leaves a commit in
        flight: what it changed, and the replies and bytes waiting, are lost."""
        done = False
        sched = self.sim.sched

        def hook(now: float) -> None:
            nonlocal done
            if done:
                return
            if now >= until or not srv.up:
                done = True
            elif srv.has_uncommitted():
                done = True
                self._crash(srv, now, "crash-uncommitted")
            if done:
                # Off the list from the next step on: a new list, because the scheduler is
                # iterating the current one (the checks of this step still run).
                sched.after_step = [h for h in sched.after_step if h is not hook]

        # Runs before the invariant checks of the same step.
        sched.after_step.insert(0, hook)

    def _client(self, c: SimClient, kind: str, now: float) -> None:
        if not c.powered:
            return
        self._count(kind)
        if kind == "client-reboot":
            c.stop(now)
        elif kind == "client-release":
            c.release(now)
        else:
            c.decline(now)

    def _client_back(self, c: SimClient, now: float) -> None:
        if c.state is ClientState.IDLE:
            c.start(now)

    def _restart(self, srv: SimServer, now: float) -> None:
        if not srv.up:
            srv.restart(now)

    def _partner_down(self, srv: SimServer, now: float) -> None:
        peer = srv.peer
        partner = self.partner[srv.name]
        if not isinstance(peer, FailoverPeer) or partner.up:
            return
        if peer.partner_down(srv.local(now)):
            self._count("partner-down")
        else:
            self._count("partner-down-refused")
        srv.peer_receive(b"", now)  # end the step through the server (commit, send, arm)

    def _noise(self, f: Fault) -> None:
        self._count(f"{f.kind}:{f.mode}")
        link = self.link
        p = f.value
        if f.mode == "slow":
            # latency spikes, some beyond tReceive (20 s): the connection drops and returns
            link.faults = Faults(delay_s=p * 10, jitter_s=p * 60, retransmit_s=5.0)
        elif f.mode == "stream":
            link.faults = Faults(delay_s=0.01, jitter_s=p, loss=p, retransmit_s=1.0)
        else:
            link.stream = False
            link.fragment = True
            link.faults = Faults(
                delay_s=0.01, jitter_s=0.05, loss=p / 5, duplicate=p / 5, reorder=p / 5,
                reorder_delay_s=0.2,
            )

    def _quiet_link(self) -> None:
        self.link.faults = Faults()
        self.link.stream = True
        self.link.fragment = False

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Run the schedule: faults, then the quiet tail (raises InvariantViolation)."""
        sc = self.schedule
        self.sim.run_until(sc.fault_end)
        # Whatever the faults left behind is undone at fault_end (they all end by then).
        self.sim.run_until(sc.end)

    def liveness_problems(self) -> list[str]:
        """After the quiet tail: both servers in NORMAL, stores agreeing, clients served."""
        sim = self.sim
        now = sim.sched.now
        out: list[str] = []
        for srv in (self.p, self.s):
            if not srv.up:
                out.append(f"{srv.name} is down at the end")
                continue
            peer = srv.peer
            assert isinstance(peer, FailoverPeer)
            if peer.state is not ServerState.NORMAL:
                out.append(f"{srv.name} ends in {peer.state.name}, not NORMAL")
        if out:
            return out
        margin = 5.0
        for a, b in ((self.p, self.s), (self.s, self.p)):
            for addr, le in a.store.leases.items():
                if le.state is not BindingState.ACTIVE or a.true_time(le.end) <= now + margin:
                    continue
                other = b.store.leases.get(addr)
                if (
                    other is None
                    or other.state is not BindingState.ACTIVE
                    or lease_key(other) != lease_key(le)
                    or b.true_time(other.end) <= now
                ):
                    theirs = "nothing" if other is None else other.state.name
                    out.append(
                        f"{addr} ACTIVE in {a.name}'s store until "
                        f"{a.true_time(le.end) - sim.start:.0f}, {b.name}'s has {theirs}"
                    )
        unserved = [c.name for c in self.clients if c.holds(now) is None]
        if unserved:
            out.append(f"clients without an address at the end: {', '.join(unserved)}")
        return out


def run_schedule(
    schedule: Schedule, *, tail: int = 60, trace: bool = True
) -> tuple[SeedResult, DstRun | None]:
    """Run one schedule; never raises (the outcome says what went wrong)."""
    res = SeedResult(schedule.seed, ok=True)
    run: DstRun | None = None
    try:
        run = DstRun(schedule, trace=trace)
        run.run()
        problems = run.liveness_problems()
        if problems:
            res.ok = False
            res.failure = "liveness"
            res.message = (
                f"seed={schedule.seed}: liveness: " + "; ".join(problems)
                + "\n--- trace tail:\n" + run.sim.trace.text(last=tail)
            )
    except InvariantViolation as exc:
        res.ok = False
        res.failure = "safety"
        res.message = str(exc)
    except Exception:
        res.ok = False
        res.failure = "error"
        res.message = f"seed={schedule.seed}: exception\n" + traceback.format_exc()
        if run is not None:
            res.message += "--- trace tail:\n" + run.sim.trace.text(last=tail)
    if run is not None:
        res.injected = run.injected
        res.steps = run.sim.sched.steps
        res.acks = run.mclt.checked
    return res, run


def run_seed(seed: int, *, trace: bool = False) -> SeedResult:
    """Draw and run the schedule of ``seed``. Without ``trace`` the run records no trace
    (faster) and a failing seed is run once more with it, for the message's trace tail:
    the outcome is the same either way (a run is a function of its seed, and nothing in
    the simulation reads the trace)."""
    res = run_schedule(make_schedule(seed), trace=trace)[0]
    if not res.ok and not trace:
        res = run_schedule(make_schedule(seed), trace=True)[0]
    return res


# ---------------------------------------------------------------------- many seeds


@dataclass(slots=True)
class SoakReport:
    seeds: int = 0
    steps: int = 0
    acks: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    failures: list[SeedResult] = field(default_factory=list)
    timed_out: bool = False
    elapsed_s: float = 0.0

    def add(self, r: SeedResult) -> None:
        self.seeds += 1
        self.steps += r.steps
        self.acks += r.acks
        self.injected.update(r.injected)
        if not r.ok:
            self.failures.append(r)

    def text(self) -> str:
        lines = [
            f"seeds run: {self.seeds}{' (time limit reached)' if self.timed_out else ''} "
            f"in {self.elapsed_s:.1f} s; {self.steps} steps, {self.acks} ACKs checked",
            "faults injected by kind:",
        ]
        lines.extend(f"  {k:<24} {v}" for k, v in sorted(self.injected.items()))
        by_kind = Counter(r.failure for r in self.failures)
        lines.append(
            f"violations: {len(self.failures)}"
            + (f" ({', '.join(f'{k} {v}' for k, v in sorted(by_kind.items()))})" if by_kind else "")
        )
        for r in sorted(self.failures, key=lambda r: r.seed):
            lines.append(f"  seed {r.seed} [{r.failure}]: {r.first_line()[:300]}")
        return "\n".join(lines)


def soak(
    seeds: Iterable[int], *, workers: int = 0, time_limit_s: float | None = None
) -> SoakReport:
    """Run ``seeds`` over ``workers`` processes (0: every core), stopping at the time limit."""
    report = SoakReport()
    started = time.monotonic()
    n = workers or multiprocessing.cpu_count()
    deadline = None if time_limit_s is None else started + time_limit_s

    def results() -> Iterator[SeedResult]:
        if n <= 1:
            for s in seeds:
                yield run_seed(s)
                if deadline is not None and time.monotonic() > deadline:
                    report.timed_out = True
                    return
            return
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with ctx.Pool(n) as pool:
            for r in pool.imap_unordered(run_seed, seeds, chunksize=4):
                yield r
                if deadline is not None and time.monotonic() > deadline:
                    report.timed_out = True
                    pool.terminate()
                    return

    for r in results():
        report.add(r)
    report.elapsed_s = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tandem.sim.faults",
        description="Deterministic simulation testing of the failover pair.",
    )
    ap.add_argument("--seed", type=int, help="replay one seed: schedule, outcome, trace tail")
    ap.add_argument("--first", type=int, default=0, help="first seed of a range")
    ap.add_argument("--count", type=int, default=1000, help="how many seeds")
    ap.add_argument("--workers", type=int, default=0, help="processes (0: every core)")
    ap.add_argument("--time-limit", type=float, default=None, help="stop after this many s")
    ap.add_argument("--tail", type=int, default=60, help="trace lines shown on a failure")
    ap.add_argument("--trace", action="store_true", help="with --seed: print the whole trace")
    args = ap.parse_args(argv)
    if args.seed is not None:
        sc = make_schedule(args.seed)
        print(sc.text())
        res, run = run_schedule(sc, tail=args.tail)
        if args.trace and run is not None:
            print(run.sim.trace.text())
        print(f"faults injected: {dict(sorted(res.injected.items()))}")
        print(f"steps {res.steps}, ACKs checked {res.acks}")
        if res.ok:
            print("OK: every invariant held; both servers NORMAL, stores agree, clients served")
            return 0
        print(f"VIOLATION ({res.failure}):\n{res.message}")
        return 1
    report = soak(
        range(args.first, args.first + args.count),
        workers=args.workers,
        time_limit_s=args.time_limit,
    )
    print(report.text())
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())

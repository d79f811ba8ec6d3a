"""A hot-standby failover pair of real ``tandem serve`` processes with real clients.

Topology (every piece in namespaces this module creates):

    client LAN 192.0.2.0/24 (bridge br0 in "lan")
      primary  eth0 192.0.2.2   standby eth0 192.0.2.3   clients eth0 (dhclient, udhcpc)
    failover link 198.51.100.0/24 (a veth pair between the two server namespaces)
      primary  fo0 198.51.100.2  <-- TCP 647 -->  standby fo0 198.51.100.3

Timers every real client honours (real-clients.md): MCLT 30 s, scope lease 60 s, reserve
20 % of a 100-address pool. One scenario (about 40 s), then one test per expectation:

  both servers reach NORMAL, the standby holds its reserve -> a dhclient and a udhcpc are
  served by the primary (lease = MCLT; the standby stays silent) -> the standby learns both
  bindings -> ``kill -9`` the primary -> the standby goes to COMMUNICATIONS-INTERRUPTED -> a
  new dhclient and udhcpc are served by the standby from its reserve (lease = MCLT) -> the
  first two clients, whose unicast renewals go unanswered, rebind by broadcast to the
  standby and keep their addresses; the new ones' unicast renewals to the standby go
  unanswered too (2.4) and they rebind by broadcast -> the primary restarts on the same
  store -> both servers are back in NORMAL -> both stores hold the same ACTIVE bindings ->
  the capture on the bridge shows no address ACKed to two clients at overlapping times.

What happened on the wire is asserted from a tshark capture on the LAN bridge; the server
states from the servers' FAILOVER_STATE_CHANGED log lines; the bindings from
``tandem leases -c FILE --json --all``.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .capture import ACK, BROADCAST_IP, OFFER, REQUEST, Capture, Pkt
from .clients import BOUND_EVENTS, Dhclient, DhcpClient, HookEvent, Udhcpc
from .conftest import require
from .netns import Lab, Netns, wait_for
from .servers import (
    ServerSpec,
    StoredLease,
    SubnetSpec,
    TandemServer,
    server_kind,
)

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "192.0.2.0/24"
POOL = ("192.0.2.100", "192.0.2.199")  # 100 addresses
LAN_IP = {"primary": "192.0.2.2", "secondary": "192.0.2.3"}
FO_IP = {"primary": "198.51.100.2", "secondary": "198.51.100.3"}
FO_PORT = 647
MCLT_S, LEASE_S, RESERVE_PERCENT = 30, 60, 20
RESERVE = 100 * RESERVE_PERCENT // 100

# first clients (served by the primary), then new clients (served by the standby)
FIRST = {"dhclient-a": "02:00:5e:fa:11:01", "udhcpc-a": "02:00:5e:fa:11:02"}
LATER = {"dhclient-b": "02:00:5e:fa:11:03", "udhcpc-b": "02:00:5e:fa:11:04"}
MACS = {**FIRST, **LATER}

STATE_LINE = re.compile(r"FAILOVER_STATE_CHANGED from=(\S+) to=(\S+)")

class PairServer(TandemServer):
    """``tandem serve`` with a [failover] section (hot standby, the reference shape with
    real-client timers)."""

    def __init__(self, ns: Netns, role: str, workdir: Path):
        self.role = role
        self.kind = role  # names the log files: server-primary-1.log, server-secondary-1.log
        workdir.mkdir(parents=True, exist_ok=True)
        spec = ServerSpec(
            LAN_IP[role],
            "eth0",
            (SubnetSpec(PREFIX, POOL, LEASE_S, routers=(LAN_IP["primary"],)),),
        )
        super().__init__(ns, spec, workdir)

    def render(self) -> str:
        partner = "secondary" if self.role == "primary" else "primary"
        return super().render() + "\n".join(
            [
                "",
                "[failover]",
                'name = "tdm-e2e-hot-standby"',
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
        """(from, to) of every FAILOVER_STATE_CHANGED line in the logs of the runs numbered
        ``since_start`` and later."""
        out = []
        for n in range(since_start, self.starts + 1):
            log = self.ns.lab.workdir / f"server-{self.kind}-{n}.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            out += STATE_LINE.findall(text)
        return out

    def all_logs(self) -> str:
        return "\n".join(
            (self.ns.lab.workdir / f"server-{self.kind}-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )


@dataclass
class Scenario:
    servers: dict[str, PairServer]
    clients: dict[str, DhcpClient]
    workdir: Path
    packets: list[Pkt] = field(default_factory=list)
    bound: dict[str, HookEvent] = field(default_factory=dict)
    rebound: dict[str, HookEvent] = field(default_factory=dict)  # by the standby
    recovered: dict[str, HookEvent] = field(default_factory=dict)  # after the restart
    normal_again_at: float = 0.0
    reserve: set[str] = field(default_factory=set)  # BACKUP addresses at the standby
    standby_knew: list[StoredLease] = field(default_factory=list)
    killed_at: float = 0.0
    restarted_at: float = 0.0
    standby_lines_before_restart: int = 0
    final: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    failed: str = ""  # the step the scenario stopped at, with the error

    def of(self, name: str) -> list[Pkt]:
        return [p for p in self.packets if p.chaddr == MACS[name]]

    def context(self, name: str | None = None) -> str:
        pk = "\n".join(
            p.short() + f" sid={p.server_id} lt={p.lease_time}"
            for p in (self.of(name) if name else self.packets)
        )
        logs = "\n".join(
            f"--- {role} log (tail):\n" + "\n".join(s.all_logs().splitlines()[-25:])
            for role, s in self.servers.items()
        )
        client = f"\n--- client log:\n{self.clients[name].log_tail()}" if name else ""
        return (
            f"\n--- steps: {self.steps}\n--- failed: {self.failed}\n--- packets:\n{pk}"
            f"{client}\n{logs}\n--- workdir: {self.workdir}"
        )


def build(lab: Lab) -> tuple[Netns, dict[str, Netns], dict[str, Netns]]:
    lan, servers = lab.failover_pair(LAN_IP, FO_IP)
    clients = {}
    for name, mac in MACS.items():
        ns = lab.netns(name.replace("dhclient", "dhc").replace("udhcpc", "udh"))
        lab.plug(lan, "br0", ns, mac=mac)
        for key in ("all", "default", "eth0"):
            ns.sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
        clients[name] = ns
    return lan, servers, clients


def make_client(name: str, ns: Netns, workdir: Path) -> DhcpClient:
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    return (Dhclient if name.startswith("dhclient") else Udhcpc)(ns, d)


def start_client(name: str, client: DhcpClient) -> None:
    # the clients module names every process "client-<kind>"; two of a kind need two logs
    client.proc = client.ns.spawn(f"client-{name}", *client.command())


def reached(server: PairServer, state: str, since_start: int = 1, skip: int = 0) -> bool:
    return any(to == state for _f, to in server.transitions(since_start)[skip:])


def active_pairs(server: PairServer) -> set[tuple[str, str]]:
    return {(le.address, le.hwaddr) for le in server.leases() if le.state == "ACTIVE"}


def wait_bound(
    sc: Scenario, names: list[str], after: float | dict[str, float], timeout: float
) -> None:
    """Wait (in parallel) for each client's next bound event after ``after`` (per client or
    for all); the first one goes to ``sc.bound``, the next to ``sc.rebound``, the third to
    ``sc.recovered``."""
    results: dict[str, HookEvent | BaseException] = {}

    def one(name: str) -> None:
        try:
            since = after[name] if isinstance(after, dict) else after
            results[name] = sc.clients[name].wait_event(BOUND_EVENTS, timeout, after=since)
        except BaseException as exc:
            results[name] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    for name in names:
        res = results.get(name)
        if not isinstance(res, HookEvent):
            raise RuntimeError(f"{name} not bound: {res!r}")
        for target in (sc.bound, sc.rebound, sc.recovered):
            if name not in target:
                target[name] = res
                break


def run_scenario(sc: Scenario) -> None:
    primary, standby = sc.servers["primary"], sc.servers["secondary"]
    step = "start both servers"
    try:
        standby.start()
        primary.start()
        step = "both servers reach NORMAL"

        def normal() -> bool:
            return reached(primary, "NORMAL") and reached(standby, "NORMAL")

        wait_for(normal, 60, step)
        sc.steps.append("normal")
        step = "the standby holds its reserve (BACKUP addresses in its store)"

        def reserve() -> set[str] | None:
            got = {le.address for le in standby.leases() if le.state == "BACKUP"}
            return got if len(got) >= RESERVE else None

        sc.reserve = wait_for(reserve, 20, step, interval=0.5)
        sc.steps.append(f"reserve {len(sc.reserve)}")

        step = "first clients bound by the primary"
        t0 = time.time()
        for name in FIRST:
            start_client(name, sc.clients[name])
        wait_bound(sc, list(FIRST), t0 - 1, 30)
        sc.steps.append("first bound " + str({n: sc.bound[n].address for n in FIRST}))

        step = "the standby learns the first bindings (binding updates)"
        want = {(sc.bound[n].address, MACS[n]) for n in FIRST}
        wait_for(lambda: want <= active_pairs(standby), 10, step, interval=0.3)
        sc.standby_knew = standby.leases()
        sc.steps.append("standby knows")

        step = "kill -9 the primary; the standby notices"
        n_before = len(standby.transitions())
        primary.kill9()
        sc.killed_at = time.time()
        wait_for(lambda: reached(standby, "COMMUNICATIONS_INTERRUPTED", skip=n_before), 30, step)
        sc.steps.append("comm-interrupted")

        step = "new clients bound by the standby"
        t1 = time.time()
        for name in LATER:
            start_client(name, sc.clients[name])
        wait_bound(sc, list(LATER), t1 - 1, 40)
        sc.steps.append("later bound " + str({n: sc.bound[n].address for n in LATER}))

        step = "first clients rebind to the standby"
        # their leases are MCLT (30 s) long; dhclient rebinds at ~88-91 %, udhcpc soon
        # after its failed unicast renewal at T1
        remaining = max(sc.bound[n].time for n in FIRST) + MCLT_S + 5 - time.time()
        wait_bound(sc, list(FIRST), sc.killed_at, max(remaining, 5))
        sc.steps.append("first rebound " + str({n: sc.rebound[n].address for n in FIRST}))

        step = "new clients rebind to the standby (their unicast renewals unanswered)"
        remaining = max(sc.bound[n].time for n in LATER) + MCLT_S + 5 - time.time()
        wait_bound(sc, list(LATER), {n: sc.bound[n].time for n in LATER}, max(remaining, 5))
        sc.steps.append("later rebound " + str({n: sc.rebound[n].address for n in LATER}))

        step = "restart the primary (same store); both back in NORMAL"
        sc.standby_lines_before_restart = len(standby.transitions())
        sc.restarted_at = time.time()
        primary.start()
        wait_for(
            lambda: (
                reached(primary, "NORMAL", since_start=2)
                and reached(standby, "NORMAL", skip=sc.standby_lines_before_restart)
            ),
            90,
            step,
        )
        sc.steps.append("normal again")
        sc.normal_again_at = time.time()

        step = "every client renewed or rebound with the primary after its return"
        # udhcpc renews by unicast to its original server (the primary) at T1; dhclient
        # follows the standby, which is silent in NORMAL, and rebinds by broadcast at T2
        remaining = max(sc.rebound[n].time for n in MACS) + MCLT_S + 5 - time.time()
        wait_bound(sc, list(MACS), sc.normal_again_at, max(remaining, 5))
        sc.steps.append("recovered " + str({n: sc.recovered[n].address for n in MACS}))

        step = "both stores agree on the ACTIVE bindings"
        clients = {(sc.bound[n].address, MACS[n]) for n in MACS}

        def agree() -> bool:
            p, s = active_pairs(primary), active_pairs(standby)
            sc.final = {"primary": p, "secondary": s}
            return p == s and clients <= p

        wait_for(agree, 30, step, interval=0.5)
        sc.steps.append("stores agree")
    except Exception as exc:
        sc.failed = f"{step}: {exc!r}"
        if not sc.final:
            try:
                sc.final = {role: active_pairs(s) for role, s in sc.servers.items()}
            except Exception as exc2:  # the store may not exist yet
                sc.failed += f" (stores unreadable: {exc2!r})"


@pytest.fixture(scope="module")
def scenario(module_lab: Lab) -> Scenario:
    require("dhclient", "udhcpc")
    if server_kind() != "tandem":
        pytest.skip("the failover pair is a Tandem feature (TANDEM_E2E_SERVER=kea has none)")
    lab = module_lab
    lan, server_ns, client_ns = build(lab)
    servers = {role: PairServer(ns, role, lab.workdir / role) for role, ns in server_ns.items()}
    clients = {name: make_client(name, ns, lab.workdir) for name, ns in client_ns.items()}
    sc = Scenario(servers, clients, lab.workdir)
    cap = Capture(lan, "br0", lab.workdir / "lan.pcapng").start()
    run_scenario(sc)
    sc.packets = cap.stop()
    for c in clients.values():
        c.stop()
    for s in servers.values():
        s.stop()
    return sc


# --- helpers over the capture ------------------------------------------------------------


def _acks(pkts: list[Pkt]) -> list[Pkt]:
    return [p for p in pkts if p.mtype == ACK and p.yiaddr != "0.0.0.0"]


def _first_ack(sc: Scenario, name: str) -> Pkt:
    acks = _acks(sc.of(name))
    assert acks, f"no ACK for {name} in the capture" + sc.context(name)
    return acks[0]


def _need(sc: Scenario, step: str) -> None:
    """Fail (with the scenario's context) when the scenario never got to ``step``."""
    if not any(s.startswith(step) for s in sc.steps):
        pytest.fail(f"the scenario did not get to '{step}'" + sc.context())


# --- the expectations -----------------------------------------------------------------


def test_pair_reaches_normal(scenario: Scenario) -> None:
    _need(scenario, "normal")
    for role, server in scenario.servers.items():
        assert reached(server, "NORMAL"), f"{role}: {server.transitions()}" + scenario.context()


def test_standby_holds_its_reserve(scenario: Scenario) -> None:
    _need(scenario, "reserve")
    lo, hi = (ipaddress.IPv4Address(a) for a in POOL)
    assert len(scenario.reserve) == RESERVE, scenario.reserve
    assert all(lo <= ipaddress.IPv4Address(a) <= hi for a in scenario.reserve)


@pytest.mark.parametrize("name", list(FIRST))
def test_first_clients_served_by_primary_with_mclt(scenario: Scenario, name: str) -> None:
    _need(scenario, "first bound")
    ack = _first_ack(scenario, name)
    assert ack.server_id == LAN_IP["primary"], scenario.context(name)
    assert ack.ip_src == LAN_IP["primary"], scenario.context(name)
    assert ack.lease_time == MCLT_S, scenario.context(name)  # 1.3
    assert ack.yiaddr == scenario.bound[name].address, scenario.context(name)
    lo, hi = (ipaddress.IPv4Address(a) for a in POOL)
    assert lo <= ipaddress.IPv4Address(ack.yiaddr) <= hi
    assert ack.yiaddr not in scenario.reserve, "the primary leased a reserve address"


def test_standby_silent_while_primary_up(scenario: Scenario) -> None:
    _need(scenario, "comm-interrupted")
    sent = [
        p
        for p in scenario.packets
        if p.mtype in (OFFER, ACK)
        and p.time < scenario.killed_at
        and LAN_IP["secondary"] in (p.ip_src, p.server_id)
    ]
    assert not sent, "\n".join(p.short() for p in sent) + scenario.context()  # 1.1, 1.2


def test_standby_learned_first_bindings(scenario: Scenario) -> None:
    _need(scenario, "standby knows")
    known = {(le.address, le.hwaddr) for le in scenario.standby_knew if le.state == "ACTIVE"}
    for name in FIRST:
        assert (scenario.bound[name].address, MACS[name]) in known, scenario.standby_knew


def test_standby_notices_primary_loss(scenario: Scenario) -> None:
    _need(scenario, "comm-interrupted")
    tos = [to for _f, to in scenario.servers["secondary"].transitions()]
    assert "COMMUNICATIONS_INTERRUPTED" in tos[tos.index("NORMAL") :], tos


@pytest.mark.parametrize("name", list(LATER))
def test_new_clients_served_by_standby_from_reserve(scenario: Scenario, name: str) -> None:
    _need(scenario, "later bound")
    ack = _first_ack(scenario, name)
    assert ack.time > scenario.killed_at, scenario.context(name)
    assert ack.server_id == LAN_IP["secondary"], scenario.context(name)  # 2.2
    assert ack.ip_src == LAN_IP["secondary"], scenario.context(name)
    assert ack.lease_time == MCLT_S, scenario.context(name)
    assert ack.yiaddr in scenario.reserve, f"{ack.yiaddr} not from the reserve" + (
        scenario.context(name)
    )
    assert ack.yiaddr == scenario.bound[name].address, scenario.context(name)


@pytest.mark.parametrize("name", list(FIRST))
def test_first_clients_rebind_to_standby(scenario: Scenario, name: str) -> None:
    _need(scenario, "first rebound")
    sc = scenario
    addr = sc.bound[name].address
    assert sc.rebound[name].address == addr, sc.context(name)
    pkts = sc.of(name)
    rebinds = [
        p
        for p in pkts
        if p.mtype == REQUEST
        and p.time > sc.killed_at
        and p.ciaddr == addr
        and p.ip_dst == BROADCAST_IP
    ]
    assert rebinds, "no broadcast REBINDING request after the kill" + sc.context(name)
    acked = [
        a
        for a in _acks(pkts)
        if a.time > sc.killed_at
        and a.server_id == LAN_IP["secondary"]
        and any(r.xid == a.xid and r.time <= a.time for r in rebinds)
    ]
    assert acked, "no ACK from the standby for the rebind" + sc.context(name)  # 2.3
    assert acked[0].yiaddr == addr, sc.context(name)
    assert acked[0].lease_time == MCLT_S, sc.context(name)
    # nothing but the standby answered between the kill and the restart
    others = [
        a
        for a in _acks(pkts)
        if sc.killed_at < a.time < (sc.restarted_at or float("inf"))
        and a.server_id != LAN_IP["secondary"]
    ]
    assert not others, sc.context(name)


@pytest.mark.parametrize("name", list(LATER))
def test_standby_ignores_unicast_renewals_while_interrupted(scenario: Scenario, name: str) -> None:
    """2.4: in COMMUNICATIONS-INTERRUPTED the standby answers broadcast traffic only; a
    client it leased to renews by unicast at T1 unanswered, then rebinds by broadcast."""
    _need(scenario, "later rebound")
    sc = scenario
    pkts = sc.of(name)
    addr = sc.bound[name].address
    standby = LAN_IP["secondary"]
    unicast = [
        p
        for p in pkts
        if p.mtype == REQUEST and p.ip_dst == standby and sc.killed_at < p.time < sc.restarted_at
    ]
    assert unicast, "no unicast RENEWING request to the standby during the outage" + (
        sc.context(name)
    )
    for u in unicast:
        assert u.ciaddr == addr, sc.context(name)
        # dhclient keeps one xid for renewals and rebinds: what answers this request is any
        # ACK before the client's next broadcast
        nxt = min(
            (
                p.time
                for p in pkts
                if p.mtype == REQUEST and p.ip_dst == BROADCAST_IP and p.time > u.time
            ),
            default=sc.restarted_at,
        )
        answered = [a for a in _acks(pkts) if u.time <= a.time < nxt]
        assert not answered, f"unicast renewal at {u.time:.1f} answered" + sc.context(name)
    assert scenario.rebound[name].address == addr, sc.context(name)
    rebind_acks = [
        a
        for a in _acks(pkts)
        if unicast[0].time < a.time < sc.restarted_at and a.server_id == standby
    ]
    assert rebind_acks, "no broadcast rebind ACKed by the standby" + sc.context(name)
    assert rebind_acks[0].yiaddr == addr and rebind_acks[0].lease_time == MCLT_S


def test_pair_returns_to_normal_after_restart(scenario: Scenario) -> None:
    _need(scenario, "normal again")
    sc = scenario
    p, s = sc.servers["primary"], sc.servers["secondary"]
    assert reached(p, "NORMAL", since_start=2), p.transitions(2)
    assert reached(s, "NORMAL", skip=sc.standby_lines_before_restart), s.transitions()


@pytest.mark.parametrize("name", list(MACS))
def test_clients_served_by_primary_after_recovery(scenario: Scenario, name: str) -> None:
    """3.2/3.3/4.1: back in NORMAL, the primary answers every client's renewal or rebind,
    and each keeps its address; the standby stays silent again."""
    _need(scenario, "recovered")
    sc = scenario
    addr = sc.bound[name].address
    assert sc.recovered[name].address == addr, sc.context(name)
    after = [a for a in _acks(sc.of(name)) if a.time > sc.normal_again_at]
    assert after, "no ACK after the pair was back in NORMAL" + sc.context(name)
    ack = after[0]
    assert ack.server_id == LAN_IP["primary"] and ack.ip_src == LAN_IP["primary"], sc.context(name)
    assert ack.yiaddr == addr, sc.context(name)
    assert ack.lease_time is not None and MCLT_S <= ack.lease_time <= LEASE_S, sc.context(name)
    from_standby = [
        p
        for p in sc.packets
        if p.mtype in (OFFER, ACK)
        and p.time > sc.normal_again_at
        and LAN_IP["secondary"] in (p.ip_src, p.server_id)
    ]
    assert not from_standby, "\n".join(p.short() for p in from_standby) + sc.context()


def test_stores_agree_on_active_bindings(scenario: Scenario) -> None:
    sc = scenario
    _need(sc, "normal again")
    assert sc.final, sc.context()
    p, s = sc.final["primary"], sc.final["secondary"]
    assert p == s, f"only primary: {p - s}; only standby: {s - p}" + sc.context()
    for name, mac in MACS.items():
        assert (sc.bound[name].address, mac) in p, f"{name} not ACTIVE in the stores: {p}"


def test_no_address_acked_to_two_clients_at_once(scenario: Scenario) -> None:
    sc = scenario
    _need(sc, "later bound")
    acks = _acks(sc.packets)
    assert acks, sc.context()
    # the capture is only meaningful if both servers ACKed something
    assert {a.server_id for a in acks} >= set(LAN_IP.values()), sc.context()
    by_addr: dict[str, list[tuple[float, float, str, str]]] = {}
    for a in acks:
        assert a.lease_time is not None, a.short()
        by_addr.setdefault(a.yiaddr, []).append(
            (a.time, a.time + a.lease_time, a.chaddr, a.server_id)
        )
    clashes = []
    for addr, spans in by_addr.items():
        for i, (s1, e1, c1, sid1) in enumerate(spans):
            for s2, e2, c2, sid2 in spans[i + 1 :]:
                if c1 != c2 and s1 < e2 and s2 < e1:
                    clashes.append(
                        f"{addr}: {c1} by {sid1} [{s1:.1f}, {e1:.1f}] and "
                        f"{c2} by {sid2} [{s2:.1f}, {e2:.1f}]"
                    )
    assert not clashes, "\n".join(clashes) + sc.context()

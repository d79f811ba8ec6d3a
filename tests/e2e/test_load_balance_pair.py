"""A load-balance failover pair of real ``tandem serve`` processes with 24 real clients.

Topology (every piece in namespaces this module creates), as tests/e2e/test_failover_pair.py:

    client LAN 192.0.2.0/24 (bridge br0 in "lan")
      primary eth0 192.0.2.2   secondary eth0 192.0.2.3   24 clients, one namespace each
    failover link 198.51.100.0/24 (a veth pair between the two server namespaces)

Both servers run ``mode = "load-balance"`` 50/50 with MCLT 30 s and a 60 s scope lease, and
``load_balance_max_seconds = 0`` (no delayed service: the split is strict, so which server
answers is fully determined by the hash). The client MACs are chosen so that 12 clients hash
to each server's buckets (RFC 3074, ``tandem.failover.lb_hash``, whose vectors are
unit-tested). What is hashed differs per client: udhcpc sends a client identifier (option 61 =
01 + MAC) and is hashed by it, dhclient sends none and is hashed by its 6-byte MAC; the test
checks in the capture that each client did send (or not send) option 61.

Scenario: both servers reach NORMAL and split the 100 free addresses 50/50 (FREE / BACKUP)
-> 8 dhclient and 16 udhcpc start -> every client is bound, then renews at T1 -> both stores
hold every binding. Asserted from a tshark capture on the LAN bridge: every OFFER/ACK a client
received came from the server that owns its bucket, from that server's own addresses, and no
address was ACKed to two clients at overlapping times.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tandem.failover.lb_hash import rfc3074_hash

from .capture import ACK, DISCOVER, OFFER, Capture, Pkt
from .clients import BOUND_EVENTS, Dhclient, DhcpClient, HookEvent, Udhcpc
from .conftest import require
from .netns import Lab, Netns, wait_for
from .servers import ServerSpec, SubnetSpec, TandemServer, server_kind

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(300)]

PREFIX = "192.0.2.0/24"
POOL = ("192.0.2.100", "192.0.2.199")  # 100 addresses
LAN_IP = {"primary": "192.0.2.2", "secondary": "192.0.2.3"}
FO_IP = {"primary": "198.51.100.2", "secondary": "198.51.100.3"}
FO_PORT = 647
MCLT_S, LEASE_S, PRIMARY_PERCENT = 30, 60, 50
PER_SIDE = 12
STATE_LINE = re.compile(r"FAILOVER_STATE_CHANGED from=(\S+) to=(\S+)")


def _mac(i: int) -> str:
    return f"02:00:5e:1b:{i >> 8:02x}:{i & 0xFF:02x}"


def hash_key(kind: str, mac: str) -> bytes:
    """What the server hashes: udhcpc's client identifier (01 + MAC, busybox's default),
    dhclient's hardware address."""
    hw = bytes.fromhex(mac.replace(":", ""))
    return b"\x01" + hw if kind == "udhcpc" else hw


def owner_of(kind: str, mac: str) -> str:
    """The server whose buckets the client hashes to (primary: 0 .. 127 at 50 %)."""
    bucket = rfc3074_hash(hash_key(kind, mac))
    return "primary" if bucket < round(2.56 * PRIMARY_PERCENT) else "secondary"


def owner(name: str) -> str:
    return owner_of(name.split("-")[0], MACS[name])


def _pick_macs() -> dict[str, str]:
    out: dict[str, str] = {}
    count = {"primary": 0, "secondary": 0}
    i = 0
    while min(count.values()) < PER_SIDE:
        mac = _mac(i)
        n = len(out)
        kind = "dhclient" if n % 3 == 0 else "udhcpc"  # 8 dhclient, 16 udhcpc
        side = owner_of(kind, mac)
        if count[side] < PER_SIDE:
            out[f"{kind}-{n:02d}"] = mac
            count[side] += 1
        i += 1
    return out


MACS = _pick_macs()


class LbServer(TandemServer):
    """``tandem serve`` with a load-balance [failover] section."""

    def __init__(self, ns: Netns, role: str, workdir: Path):
        self.role = role
        self.kind = role
        workdir.mkdir(parents=True, exist_ok=True)
        spec = ServerSpec(
            LAN_IP[role],
            "eth0",
            (SubnetSpec(PREFIX, POOL, LEASE_S, routers=(LAN_IP["primary"],)),),
        )
        super().__init__(ns, spec, workdir)

    def render(self) -> str:
        partner = "secondary" if self.role == "primary" else "primary"
        share = PRIMARY_PERCENT if self.role == "primary" else 100 - PRIMARY_PERCENT
        return super().render() + "\n".join(
            [
                "",
                "[failover]",
                'name = "tdm-e2e-load-balance"',
                f'role = "{self.role}"',
                'mode = "load-balance"',
                f'listen_address = "{FO_IP[self.role]}"',
                f"listen_port = {FO_PORT}",
                f'peer_address = "{FO_IP[partner]}"',
                f"peer_port = {FO_PORT}",
                f"mclt_s = {MCLT_S}",
                f"load_balance_percent = {share}",
                "load_balance_max_seconds = 0",
                "",
            ]
        )

    def transitions(self) -> list[tuple[str, str]]:
        out = []
        for n in range(1, self.starts + 1):
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
    servers: dict[str, LbServer]
    clients: dict[str, DhcpClient]
    workdir: Path
    packets: list[Pkt] = field(default_factory=list)
    backup: set[str] = field(default_factory=set)  # the secondary's BACKUP addresses at start
    bound: dict[str, HookEvent] = field(default_factory=dict)
    renewed: dict[str, HookEvent] = field(default_factory=dict)
    final: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    failed: str = ""

    def of(self, name: str) -> list[Pkt]:
        return [p for p in self.packets if p.chaddr == MACS[name]]

    def context(self, name: str | None = None) -> str:
        pk = "\n".join(
            p.short() + f" sid={p.server_id} lt={p.lease_time}"
            for p in (self.of(name) if name else self.packets[-60:])
        )
        logs = "\n".join(
            f"--- {role} log (tail):\n" + "\n".join(s.all_logs().splitlines()[-25:])
            for role, s in self.servers.items()
        )
        return (
            f"\n--- steps: {self.steps}\n--- failed: {self.failed}\n--- packets:\n{pk}\n{logs}"
            f"\n--- workdir: {self.workdir}"
        )


def build(lab: Lab) -> tuple[Netns, dict[str, Netns], dict[str, Netns]]:
    lan, servers = lab.failover_pair(LAN_IP, FO_IP)
    clients = {}
    for name, mac in MACS.items():
        ns = lab.netns("c" + name.replace("dhclient", "d").replace("udhcpc", "u"))
        lab.plug(lan, "br0", ns, mac=mac)
        for key in ("all", "default", "eth0"):
            ns.sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
        clients[name] = ns
    return lan, servers, clients


def make_client(name: str, ns: Netns, workdir: Path) -> DhcpClient:
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    return (Dhclient if name.startswith("dhclient") else Udhcpc)(ns, d)


def reached(server: LbServer, state: str) -> bool:
    return any(to == state for _f, to in server.transitions())


def active_pairs(server: LbServer) -> set[tuple[str, str]]:
    return {(le.address, le.hwaddr) for le in server.leases() if le.state == "ACTIVE"}


def wait_events(
    sc: Scenario, after: dict[str, float], timeout: float, into: dict[str, HookEvent]
) -> None:
    """Wait in parallel for each client's next bound/renew event after ``after[name]``."""
    results: dict[str, HookEvent | BaseException] = {}

    def one(name: str) -> None:
        try:
            results[name] = sc.clients[name].wait_event(BOUND_EVENTS, timeout, after=after[name])
        except BaseException as exc:
            results[name] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in after]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 5)
    missing = {n: results.get(n) for n in after if not isinstance(results.get(n), HookEvent)}
    for name in after:
        res = results.get(name)
        if isinstance(res, HookEvent):
            into[name] = res
    if missing:
        raise RuntimeError(f"not bound: {missing!r}")


def run_scenario(sc: Scenario) -> None:
    primary, secondary = sc.servers["primary"], sc.servers["secondary"]
    step = "start both servers"
    try:
        secondary.start()
        primary.start()
        step = "both servers reach NORMAL"
        wait_for(lambda: reached(primary, "NORMAL") and reached(secondary, "NORMAL"), 60, step)
        sc.steps.append("normal")

        step = "the secondary holds half the free addresses (BACKUP)"

        def split() -> set[str] | None:
            got = {le.address for le in secondary.leases() if le.state == "BACKUP"}
            return got if len(got) >= 100 - PRIMARY_PERCENT else None

        sc.backup = wait_for(split, 30, step, interval=0.5)
        sc.steps.append(f"split {len(sc.backup)}")

        step = "every client bound"
        t0 = time.time()
        for name, client in sc.clients.items():
            client.proc = client.ns.spawn(f"client-{name}", *client.command())
            time.sleep(0.05)
        wait_events(sc, dict.fromkeys(sc.clients, t0 - 1), 60, sc.bound)
        sc.steps.append("bound")

        step = "every client renewed"
        # first leases are MCLT (30 s): the renewal comes at T1 (15 s) by unicast
        wait_events(sc, {n: sc.bound[n].time for n in sc.clients}, MCLT_S + 10, sc.renewed)
        sc.steps.append("renewed")

        step = "both stores hold every binding"
        want = {(sc.renewed[n].address, MACS[n]) for n in sc.clients}

        def agree() -> bool:
            p, s = active_pairs(primary), active_pairs(secondary)
            sc.final = {"primary": p, "secondary": s}
            return want <= p and want <= s

        wait_for(agree, 30, step, interval=0.5)
        sc.steps.append("stores agree")
    except Exception as exc:
        sc.failed = f"{step}: {exc!r}"


@pytest.fixture(scope="module")
def scenario(module_lab: Lab) -> Scenario:
    require("dhclient", "udhcpc")
    if server_kind() != "tandem":
        pytest.skip("the failover pair is a Tandem feature (TANDEM_E2E_SERVER=kea has none)")
    lab = module_lab
    lan, server_ns, client_ns = build(lab)
    servers = {role: LbServer(ns, role, lab.workdir / role) for role, ns in server_ns.items()}
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


def _need(sc: Scenario, step: str) -> None:
    if not any(s.startswith(step) for s in sc.steps):
        pytest.fail(f"the scenario did not get to '{step}'" + sc.context())


def _acks(pkts: list[Pkt]) -> list[Pkt]:
    return [p for p in pkts if p.mtype == ACK and p.yiaddr != "0.0.0.0"]


# --- the expectations -----------------------------------------------------------------


def test_macs_cover_both_servers() -> None:
    sides = [owner(n) for n in MACS]
    assert len(MACS) == 2 * PER_SIDE >= 20
    assert sides.count("primary") == sides.count("secondary") == PER_SIDE


def test_pair_reaches_normal_and_splits_the_free_addresses(scenario: Scenario) -> None:
    _need(scenario, "split")
    lo, hi = (ipaddress.IPv4Address(a) for a in POOL)
    assert len(scenario.backup) == 100 - PRIMARY_PERCENT, scenario.backup
    assert all(lo <= ipaddress.IPv4Address(a) <= hi for a in scenario.backup)


@pytest.mark.parametrize("name", list(MACS))
def test_each_client_is_answered_by_its_buckets_owner_only(scenario: Scenario, name: str) -> None:
    _need(scenario, "renewed")
    sc = scenario
    want = owner(name)
    # the key the server hashes: option 61 from udhcpc, none from dhclient
    discovers = [p for p in sc.of(name) if p.mtype == DISCOVER]
    assert discovers, sc.context(name)
    assert all((61 in p.option_codes) == name.startswith("udhcpc") for p in discovers)
    replies = [p for p in sc.of(name) if p.mtype in (OFFER, ACK)]
    assert replies, "no OFFER/ACK in the capture" + sc.context(name)
    wrong = [p for p in replies if p.server_id != LAN_IP[want] or p.ip_src != LAN_IP[want]]
    assert not wrong, f"expected only {want}:\n" + "\n".join(p.short() for p in wrong) + (
        sc.context(name)
    )
    acks = _acks(sc.of(name))
    assert len(acks) >= 2, "no renewal ACK" + sc.context(name)  # DORA + renewal at T1
    assert acks[0].lease_time == MCLT_S, sc.context(name)  # a new binding: the MCLT
    # ...from the owner's own addresses (the secondary's were BACKUP, the primary's FREE)
    assert (acks[0].yiaddr in sc.backup) == (want == "secondary"), sc.context(name)
    assert acks[0].yiaddr == sc.bound[name].address, sc.context(name)


def test_both_servers_answered_and_the_stores_agree(scenario: Scenario) -> None:
    _need(scenario, "stores agree")
    sc = scenario
    sids = {a.server_id for a in _acks(sc.packets)}
    assert sids == set(LAN_IP.values()), sc.context()
    for name, mac in MACS.items():
        pair = (sc.renewed[name].address, mac)
        assert pair in sc.final["primary"] and pair in sc.final["secondary"], name


def test_no_address_acked_to_two_clients_at_once(scenario: Scenario) -> None:
    sc = scenario
    _need(sc, "bound")
    by_addr: dict[str, list[tuple[float, float, str]]] = {}
    for a in _acks(sc.packets):
        assert a.lease_time is not None, a.short()
        by_addr.setdefault(a.yiaddr, []).append((a.time, a.time + a.lease_time, a.chaddr))
    clashes = [
        f"{addr}: {c1} [{s1:.1f}, {e1:.1f}] and {c2} [{s2:.1f}, {e2:.1f}]"
        for addr, spans in by_addr.items()
        for i, (s1, e1, c1) in enumerate(spans)
        for s2, e2, c2 in spans[i + 1 :]
        if c1 != c2 and s1 < e2 and s2 < e1
    ]
    assert not clashes, "\n".join(clashes) + sc.context()

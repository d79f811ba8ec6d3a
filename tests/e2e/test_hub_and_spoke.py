"""Hub and spoke with real ``tandem serve`` processes: one hub that is the hot standby of
two sites, each site with its own primary, its own subnet and its own failover
relationship, and real clients on each site.

Topology (every piece in namespaces this module creates):

    site A LAN 192.0.2.0/24 (bridge brA)      site B LAN 203.0.113.0/24 (bridge brB)
      primary A eth0 192.0.2.2                  primary B eth0 203.0.113.2
      hub       eth0 192.0.2.3                  hub       eth1 203.0.113.3
      dhclient-a                                dhclient-b
    failover links 198.51.100.0/24 (bridge brF)
      hub fo0 198.51.100.1:647  <- TCP from primary A fo0 198.51.100.2 ("site-a")
                                <- TCP from primary B fo0 198.51.100.3 ("site-b")

The hub listens once (198.51.100.1:647) and tells its partners apart by their address.
Timers as in test_failover_pair.py (MCLT 30 s, lease 60 s, reserve 20 % of 100).

Asserted: both relationships reach NORMAL at the hub (``tandem status --json``) and at each
primary; each relationship's reserve is at the hub; each client gets an address of its own
site from its site's primary (server identifier in the captured ACK) and the hub sends
nothing to either client; the hub's store learns both bindings. Then ``kill -9`` of site A's
primary: only "site-a" leaves NORMAL at the hub, and a new site-A client is served by the
hub from site A's reserve with an MCLT lease, while "site-b" stays NORMAL.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .capture import ACK, OFFER, Capture, Pkt
from .clients import BOUND_EVENTS, Dhclient, HookEvent
from .conftest import require
from .netns import Lab, Netns, wait_for
from .servers import TANDEM, ServerSpec, StoredLease, TandemServer, server_kind

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(240)]

SITES = {
    "a": {"prefix": "192.0.2.0/24", "pool": ("192.0.2.100", "192.0.2.199"),
          "primary": "192.0.2.2", "hub": "192.0.2.3", "fo": "198.51.100.2",
          "mac": "02:00:5e:fb:0a:01"},
    "b": {"prefix": "203.0.113.0/24", "pool": ("203.0.113.100", "203.0.113.199"),
          "primary": "203.0.113.2", "hub": "203.0.113.3", "fo": "198.51.100.3",
          "mac": "02:00:5e:fb:0b:01"},
}
LATE_MAC = "02:00:5e:fb:0a:02"  # a site-A client that starts after its primary died
HUB_FO = "198.51.100.1"
FO_PORT = 647
MCLT_S, LEASE_S, RESERVE_PERCENT = 30, 60, 20


def _subnet(sid: int, site: str) -> list[str]:
    s = SITES[site]
    lo, hi = s["pool"]
    return [
        "[[subnets]]",
        f"id = {sid}",
        f'prefix = "{s["prefix"]}"',
        f'pools = [{{ start = "{lo}", end = "{hi}" }}]',
        f"lease_time_s = {LEASE_S}",
        f'options = {{ routers = ["{s["primary"]}"] }}',
        "",
    ]


def _relationship(head: str, name: str, role: str, me: str, partner: str,
                  subnets: list[int] | None) -> list[str]:
    out = [
        head,
        f'name = "{name}"',
        f'role = "{role}"',
        f'listen_address = "{me}"',
        f"listen_port = {FO_PORT}",
        f'peer_address = "{partner}"',
        f"peer_port = {FO_PORT}",
        f"mclt_s = {MCLT_S}",
        f"reserve_percent = {RESERVE_PERCENT}",
    ]
    if subnets is not None:
        out.append(f"subnets = {subnets}")
    return [*out, ""]


class HubSpokeServer(TandemServer):
    """``tandem serve`` for the hub (two relationships, two LANs) or a site's primary."""

    def __init__(self, ns: Netns, role: str, workdir: Path):
        self.role = role  # "hub", "a" or "b"
        self.kind = f"hub-{role}" if role != "hub" else "hub"
        workdir.mkdir(parents=True, exist_ok=True)
        sid = SITES[role]["primary"] if role != "hub" else SITES["a"]["hub"]
        super().__init__(ns, ServerSpec(sid, "eth0", ()), workdir)

    def render(self) -> str:
        if self.role == "hub":
            # no server_id: each LAN sees the address of the hub's interface on it
            head = ['interfaces = ["eth0", "eth1"]']
            body = _subnet(1, "a") + _subnet(2, "b")
            body += _relationship("[[failover]]", "site-a", "secondary", HUB_FO,
                                  SITES["a"]["fo"], [1])
            body += _relationship("[[failover]]", "site-b", "secondary", HUB_FO,
                                  SITES["b"]["fo"], [2])
        else:
            s = SITES[self.role]
            head = [f'server_id = "{s["primary"]}"', 'interfaces = ["eth0"]']
            body = _subnet(1, self.role)
            body += _relationship("[failover]", f"site-{self.role}", "primary", s["fo"],
                                  HUB_FO, None)
        return "\n".join(
            ["[server]", *head, f'control_socket = "{self.workdir / "control.sock"}"', "",
             "[store]", f'path = "{self.store_path}"', "",
             "[lease]", "min_lease_time_s = 10", "", *body]
        )

    def status(self) -> dict[str, Any]:
        proc = subprocess.run(
            [str(TANDEM), "status", "-c", str(self.config_path), "--json"],
            capture_output=True, text=True, timeout=30, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"tandem status failed ({proc.returncode}): {proc.stderr}")
        reply = json.loads(proc.stdout)
        assert isinstance(reply, dict)
        return reply

    def states(self) -> dict[str, str]:
        try:
            return {r["name"]: r["state"] for r in self.status()["relationships"]}
        except RuntimeError:
            return {}  # not listening yet


@dataclass
class Result:
    servers: dict[str, HubSpokeServer]
    packets: dict[str, list[Pkt]] = field(default_factory=dict)  # per site LAN
    bound: dict[str, HookEvent] = field(default_factory=dict)
    hub_status: dict[str, Any] = field(default_factory=dict)
    primary_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    hub_leases: list[StoredLease] = field(default_factory=list)
    killed_at: float = 0.0
    late: HookEvent | None = None  # the site-A client bound after its primary died
    reserve_a: set[str] = field(default_factory=set)  # site A's BACKUP addresses at the hub
    states_after_kill: dict[str, str] = field(default_factory=dict)
    final_states: dict[str, str] = field(default_factory=dict)
    final_b: dict[str, Any] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    failed: str = ""
    workdir: Path = Path()

    def context(self) -> str:
        pk = "\n".join(f"[{site}] " + p.short() + f" sid={p.server_id} lt={p.lease_time}"
                       for site, pkts in self.packets.items() for p in pkts)
        logs = "\n".join(f"--- {name} log (tail):\n{s.log_tail(25)}"
                         for name, s in self.servers.items())
        return (f"\n--- steps: {self.steps}\n--- failed: {self.failed}\n--- packets:\n{pk}\n"
                f"{logs}\n--- workdir: {self.workdir}")


def build(lab: Lab) -> tuple[dict[str, Netns], dict[str, Netns], dict[str, Netns]]:
    sw = lab.netns("sw")  # the three bridges
    for br in ("brA", "brB", "brF"):
        lab.bridge(sw, br)
    servers = {name: lab.netns(name) for name in ("hub", "pa", "pb")}
    lab.plug(sw, "brA", servers["hub"], "eth0", address=f"{SITES['a']['hub']}/24")
    lab.plug(sw, "brB", servers["hub"], "eth1", address=f"{SITES['b']['hub']}/24")
    lab.plug(sw, "brF", servers["hub"], "fo0", address=f"{HUB_FO}/24")
    for site in "ab":
        ns = servers[f"p{site}"]
        br = f"br{site.upper()}"
        lab.plug(sw, br, ns, "eth0", address=f"{SITES[site]['primary']}/24")
        lab.plug(sw, "brF", ns, "fo0", address=f"{SITES[site]['fo']}/24")
    clients = {}
    for site, mac in (("a", SITES["a"]["mac"]), ("b", SITES["b"]["mac"]), ("a2", LATE_MAC)):
        ns = lab.netns(f"cl{site}")
        lab.plug(sw, f"br{site[0].upper()}", ns, mac=mac)
        for key in ("all", "default", "eth0"):
            ns.sysctl(f"net.ipv4.conf.{key}.rp_filter", "0")
        clients[site] = ns
    return {"sw": sw}, servers, clients


def run(lab: Lab, res: Result, clients_ns: dict[str, Netns]) -> None:
    hub = res.servers["hub"]
    step = "start the hub and both primaries"
    try:
        hub.start()
        for site in "ab":
            res.servers[site].start()
        step = "both relationships NORMAL at the hub"
        want = {"site-a": "NORMAL", "site-b": "NORMAL"}
        wait_for(lambda: hub.states() == want or None, 60, step, interval=0.5)
        res.steps.append("hub NORMAL")
        step = "each primary NORMAL"
        wait_for(lambda: all(res.servers[s].states() == {f"site-{s}": "NORMAL"} for s in "ab")
                 or None, 30, step, interval=0.5)
        res.steps.append("primaries NORMAL")
        step = "each relationship's reserve at the hub"
        reserve = 100 * RESERVE_PERCENT // 100

        def reserves() -> bool | None:
            rels = hub.status()["relationships"]
            return all(r["reserve"]["backup"] == reserve for r in rels) or None

        wait_for(reserves, 30, step, interval=0.5)
        res.steps.append("reserves")
        step = "a client on each site is bound"
        t0 = time.time()
        for site in clients_ns:
            (lab.workdir / f"client-{site}").mkdir(parents=True, exist_ok=True)
        clients = {site: Dhclient(ns, lab.workdir / f"client-{site}")
                   for site, ns in clients_ns.items()}
        lab.on_close(lambda: [c.stop() for c in clients.values()])
        results: dict[str, HookEvent | BaseException] = {}

        def one(site: str) -> None:
            try:
                clients[site].proc = clients[site].ns.spawn(f"client-dhclient-{site}",
                                                            *clients[site].command())
                results[site] = clients[site].wait_event(BOUND_EVENTS, 40, after=t0 - 1)
            except BaseException as exc:
                results[site] = exc

        threads = [threading.Thread(target=one, args=(s,)) for s in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(50)
        for site in "ab":
            got = results.get(site)
            if not isinstance(got, HookEvent):
                raise RuntimeError(f"client {site} not bound: {got!r}")
            res.bound[site] = got
        res.steps.append("bound " + str({s: e.address for s, e in res.bound.items()}))
        step = "the hub learns both bindings"
        want_pairs = {(res.bound[s].address, SITES[s]["mac"]) for s in "ab"}

        def learnt() -> bool | None:
            have = {(le.address, le.hwaddr) for le in hub.leases() if le.state == "ACTIVE"}
            return want_pairs <= have or None

        wait_for(learnt, 20, step, interval=0.5)
        res.hub_leases = hub.leases()
        res.hub_status = hub.status()
        res.primary_status = {s: res.servers[s].status() for s in "ab"}
        res.steps.append("hub knows")

        step = "kill -9 site A's primary: only site-a leaves NORMAL at the hub"
        res.reserve_a = {le.address for le in hub.leases()
                         if le.state == "BACKUP" and le.address.startswith("192.0.2.")}
        res.killed_at = time.time()
        res.servers["a"].kill9()
        want = {"site-a": "COMMUNICATIONS-INTERRUPTED", "site-b": "NORMAL"}
        wait_for(lambda: hub.states() == want or None, 30, step, interval=0.3)
        res.states_after_kill = hub.states()
        res.steps.append("site-a interrupted")
        step = "a new site-A client is served by the hub"
        t1 = time.time()
        late = clients["a2"]
        late.proc = late.ns.spawn("client-dhclient-a2", *late.command())
        res.late = late.wait_event(BOUND_EVENTS, 40, after=t1 - 1)
        res.steps.append(f"late bound {res.late.address}")
        res.final_states = hub.states()
        res.final_b = res.servers["b"].status()
    except Exception as exc:
        res.failed = f"{step}: {exc!r}"


@pytest.fixture(scope="module")
def hub_and_spoke(module_lab: Lab) -> Result:
    require("dhclient")
    if server_kind() != "tandem":
        pytest.skip("failover relationships are a Tandem feature (TANDEM_E2E_SERVER=kea)")
    lab = module_lab
    switch, server_ns, clients_ns = build(lab)
    servers = {
        "hub": HubSpokeServer(server_ns["hub"], "hub", lab.workdir / "hub"),
        "a": HubSpokeServer(server_ns["pa"], "a", lab.workdir / "pa"),
        "b": HubSpokeServer(server_ns["pb"], "b", lab.workdir / "pb"),
    }
    res = Result(servers, workdir=lab.workdir)
    caps = {site: Capture(switch["sw"], f"br{site.upper()}",
                          lab.workdir / f"site-{site}.pcapng").start() for site in "ab"}
    run(lab, res, clients_ns)
    for site, cap in caps.items():
        res.packets[site] = cap.stop()
    for s in servers.values():
        s.stop()
    return res


def test_both_relationships_reach_normal(hub_and_spoke: Result) -> None:
    res = hub_and_spoke
    assert not res.failed, res.context()
    rels = {r["name"]: r for r in res.hub_status["relationships"]}
    assert set(rels) == {"site-a", "site-b"}, res.context()
    assert res.hub_status["failover"] is None  # several relationships
    for name, sid in (("site-a", 1), ("site-b", 2)):
        r = rels[name]
        assert r["state"] == "NORMAL" and r["partner_state"] == "NORMAL", res.context()
        assert r["connected"] is True and r["role"] == "secondary", res.context()
        assert r["subnets"] == [sid] and r["reserve"]["backup"] == 20, res.context()
    for site in "ab":
        fo = res.primary_status[site]["failover"]
        assert fo["name"] == f"site-{site}" and fo["state"] == "NORMAL", res.context()
    log = res.servers["hub"].log_tail(400)
    assert "relationship=site-a" in log and "relationship=site-b" in log, res.context()


def test_each_sites_client_is_served_by_its_primary(hub_and_spoke: Result) -> None:
    res = hub_and_spoke
    assert not res.failed, res.context()
    for site in "ab":
        s = SITES[site]
        addr = ipaddress.ip_address(res.bound[site].address)
        assert addr in ipaddress.ip_network(s["prefix"]), res.context()
        mine = [p for p in res.packets[site] if p.chaddr == s["mac"]]
        acks = [p for p in mine if p.mtype == ACK and p.yiaddr == str(addr)
                and p.time < res.killed_at]
        assert acks, f"no ACK for site {site}'s client" + res.context()
        assert {p.server_id for p in acks} == {s["primary"]}, res.context()
        assert {p.ip_src for p in acks} == {s["primary"]}, res.context()
        # the hub, the standby of this site, sent nothing to the client (while the site's
        # primary lived: afterwards site A's client may rebind to the hub)
        from_hub = [p for p in mine if p.mtype in (OFFER, ACK) and p.ip_src == s["hub"]
                    and p.time < res.killed_at]
        assert from_hub == [], res.context()
        assert acks[-1].lease_time is not None and acks[-1].lease_time <= LEASE_S


def test_a_dead_primary_only_affects_its_relationship(hub_and_spoke: Result) -> None:
    res = hub_and_spoke
    assert not res.failed, res.context()
    assert res.states_after_kill == {"site-a": "COMMUNICATIONS-INTERRUPTED",
                                     "site-b": "NORMAL"}, res.context()
    assert res.final_states == res.states_after_kill, res.context()
    assert res.final_b["failover"]["state"] == "NORMAL", res.context()
    assert res.final_b["failover"]["connected"] is True, res.context()
    assert res.late is not None
    acks = [p for p in res.packets["a"] if p.chaddr == LATE_MAC and p.mtype == ACK
            and p.yiaddr == res.late.address]
    assert acks, "no ACK for the late site-A client" + res.context()
    for p in acks:
        assert p.server_id == SITES["a"]["hub"] and p.ip_src == SITES["a"]["hub"], res.context()
        assert p.lease_time is not None and p.lease_time <= MCLT_S, res.context()
    assert res.late.address in res.reserve_a, res.context()  # from site A's reserve


def test_the_hub_learns_each_sites_binding(hub_and_spoke: Result) -> None:
    res = hub_and_spoke
    assert not res.failed, res.context()
    active = {(le.address, le.hwaddr) for le in res.hub_leases if le.state == "ACTIVE"}
    for site in "ab":
        assert (res.bound[site].address, SITES[site]["mac"]) in active, res.context()
    backup = [le.address for le in res.hub_leases if le.state == "BACKUP"]
    assert sum(a.startswith("192.0.2.") for a in backup) == 20, res.context()
    assert sum(a.startswith("203.0.113.") for a in backup) == 20, res.context()

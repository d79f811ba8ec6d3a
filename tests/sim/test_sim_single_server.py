"""One real engine in the simulator: RFC 2131 client behaviour, faults, crashes, invariants."""

from __future__ import annotations

import time
from ipaddress import IPv4Address

import pytest

from tandem.config.schema import Config
from tandem.dhcp.engine import Engine
from tandem.leases.model import BindingState
from tandem.sim import (
    DHCLIENT,
    UDHCPC,
    ClientState,
    InvariantViolation,
    MemoryStore,
    Simulation,
    Stack,
    simple_config,
)

S1 = IPv4Address("192.0.2.1")
LEASE = 600
T1 = 300.0
T2 = 525.0  # 87.5 %


def world(n: int, seed: int = 1, commit_s: float = 0.002) -> Simulation:
    sim = Simulation(seed)
    sim.add_server("s1", S1, simple_config(S1, lease_s=LEASE), commit_s=commit_s)
    for i in range(n):
        sim.add_client(f"c{i}", start_at=i * 0.25)
    return sim


def first_bound(sim: Simulation, client: str) -> float:
    """Run time at which the client's first binding started (its REQUEST was sent)."""
    b = sim.clients[client].history[0]
    return b.start - sim.start


def test_clients_obtain_distinct_addresses_with_the_configured_lease() -> None:
    sim = world(10)
    sim.run_until(60)
    addrs = set()
    for name, c in sim.clients.items():
        assert c.state is ClientState.BOUND, name
        assert c.address is not None
        addrs.add(c.address)
        acks = sim.trace.answers_to(name)
        assert [(a.src, a.dhcp.lease_s) for a in acks if a.dhcp] == [("s1", LEASE)]
    assert len(addrs) == 10
    assert all(IPv4Address("192.0.2.100") <= a <= IPv4Address("192.0.2.199") for a in addrs)
    # Every ACKed lease is in the committed store, ACTIVE, for that client.
    store = sim.servers["s1"].store.leases
    for c in sim.clients.values():
        assert c.address is not None
        assert store[c.address].state is BindingState.ACTIVE
        assert store[c.address].hwaddr == c.hwaddr
    assert sim.invariants.checks_run == sim.sched.steps


def test_renewal_is_unicast_to_the_server_at_t1_and_gets_the_full_lease() -> None:
    sim = world(4)
    sim.run_until(T1 + 30)
    for name, c in sim.clients.items():
        t0 = first_bound(sim, name)
        renew = sim.trace.dhcp("tx", type="REQUEST", src=name, state="RENEWING")
        assert len(renew) == 1
        r = renew[0]
        assert r.unicast and r.dst == "s1"
        assert r.t == pytest.approx(t0 + T1, abs=1e-6)
        assert r.dhcp is not None and r.dhcp.ciaddr == c.history[0].address
        assert r.dhcp.server_id is None  # RFC 2131 table 5: no server id when renewing
        acks = sim.trace.answers_to(name, since=t0 + T1)
        assert len(acks) == 1 and acks[0].src == "s1"
        assert acks[0].dhcp is not None and acks[0].dhcp.lease_s == LEASE
        assert acks[0].state == "RENEWING"
        assert c.state is ClientState.BOUND and c.address == c.history[0].address


def test_unicast_path_cut_at_t1_clients_rebind_by_broadcast_at_t2() -> None:
    sim = world(3)
    names = list(sim.clients)
    cut = None

    def partition(now: float) -> None:
        nonlocal cut
        cut = sim.lan.partition(names, ["s1"], broadcast=False, both_ways=False, label="unicast")

    sim.at(T1 - 5, partition)
    sim.run_until(T2 + 30)
    for name, c in sim.clients.items():
        t0 = first_bound(sim, name)
        renews = sim.trace.dhcp("tx", type="REQUEST", src=name, state="RENEWING")
        assert renews and all(r.unicast and r.dst == "s1" for r in renews)
        lost = sim.trace.dhcp("drop", type="REQUEST", src=name)
        assert len(lost) == len(renews) and {d.detail for d in lost} == {"partition"}
        rebind = sim.trace.dhcp("tx", type="REQUEST", src=name, state="REBINDING")
        assert len(rebind) == 1 and not rebind[0].unicast
        assert rebind[0].t == pytest.approx(t0 + T2, abs=1e-6)
        acks = sim.trace.answers_to(name, since=t0 + T1)
        assert [(a.src, a.state, a.dhcp.lease_s if a.dhcp else 0) for a in acks] == [
            ("s1", "REBINDING", LEASE)
        ]
        assert c.address == c.history[0].address  # kept its address
    # Healed: the next renewal is unicast again and answered.
    assert cut is not None
    sim.lan.heal(cut)
    sim.run_until(T2 + T1 + 30)
    for name in names:
        last = sim.trace.answers_to(name)[-1]
        assert last.state == "RENEWING" and last.unicast


def test_server_down_between_t1_and_t2_clients_renew_before_t2() -> None:
    sim = world(2)
    s1 = sim.servers["s1"]
    sim.at(T1 - 10, lambda now: s1.crash(now))
    sim.at(T1 + 60, lambda now: s1.restart(now))
    sim.run_until(T2 + 1)
    for name, c in sim.clients.items():
        t0 = first_bound(sim, name)
        lost = [d for d in sim.trace.dhcp("drop", src=name) if d.detail == "host down"]
        assert lost, "the T1 renewal must have hit the dead server"
        acks = sim.trace.answers_to(name, since=t0 + T1)
        assert len(acks) == 1
        # answered by unicast retry in RENEWING (T1 + (T2 - T1) / 2), before T2
        assert acks[0].state == "RENEWING" and t0 + T1 + 60 < acks[0].t < t0 + T2
        assert c.address == c.history[0].address
    assert not sim.trace.dhcp("tx", state="REBINDING")


def test_release_frees_the_address_and_the_client_gets_it_back_later() -> None:
    sim = world(3)
    c0 = sim.clients["c0"]
    sim.run_until(100)
    addr = c0.address
    assert addr is not None
    c0.release()
    sim.run_for(1)
    rel = sim.trace.dhcp("tx", type="RELEASE", src="c0")
    assert len(rel) == 1 and rel[0].unicast and rel[0].dst == "s1"
    assert c0.state is ClientState.IDLE and c0.address is None
    assert sim.servers["s1"].store.leases[addr].state is BindingState.RELEASED
    # A new client gets a never-used address; the releasing client gets its own back.
    c9 = sim.add_client("c9", start_at=110)
    sim.at(120, lambda now: c0.start(now))
    sim.run_until(130)
    assert c9.address is not None and c9.address != addr
    assert c0.address == addr


def test_decline_abandons_the_address_and_the_client_restarts_elsewhere() -> None:
    sim = world(1)
    c0 = sim.clients["c0"]
    sim.run_until(50)
    addr = c0.address
    c0.decline()
    sim.run_for(5)
    assert c0.state is ClientState.INIT and c0.address is None
    assert sim.servers["s1"].store.leases[addr].state is BindingState.ABANDONED  # type: ignore[index]
    sim.run_for(10)  # RFC 2131 §3.1.5: restart after 10 s
    assert c0.state is ClientState.BOUND and c0.address not in (None, addr)


def test_reboot_uses_init_reboot_and_keeps_the_address() -> None:
    sim = world(1)
    c0 = sim.clients["c0"]
    sim.run_until(50)
    addr = c0.address
    c0.stop()
    sim.at(60, lambda now: c0.start(now))
    sim.run_until(70)
    req = sim.trace.dhcp("tx", type="REQUEST", src="c0", state="REBOOTING")
    assert len(req) == 1 and not req[0].unicast and req[0].dhcp is not None
    assert req[0].dhcp.requested_ip == addr and req[0].dhcp.server_id is None
    assert c0.state is ClientState.BOUND and c0.address == addr


def test_lease_expires_when_no_server_answers_and_the_client_restarts_in_init() -> None:
    sim = world(1)
    s1 = sim.servers["s1"]
    c0 = sim.clients["c0"]
    sim.at(100, lambda now: s1.crash(now))
    sim.run_until(LEASE + 5)
    assert any("expired" in e.detail for e in sim.trace.of_kind("note", "c0"))
    assert c0.state is ClientState.SELECTING and c0.address is None
    # T2 retransmissions while rebinding: half the remaining time, at least 60 s.
    rebinds = [e.t for e in sim.trace.dhcp("tx", src="c0", state="REBINDING")]
    assert rebinds[0] == pytest.approx(T2, abs=0.01) and len(rebinds) == 2
    s1.restart()
    sim.run_for(70)  # DISCOVER backoff reaches 64 s
    assert c0.state is ClientState.BOUND


def test_crash_mid_run_loses_only_uncommitted_state_and_every_ack_is_remembered() -> None:
    # A slow disk (0.5 s per commit) so that the crash lands while ACKs wait for a commit.
    sim = world(10, commit_s=0.5)
    s1 = sim.servers["s1"]
    sim.run_until(T1 - 1)
    before = {n: c.address for n, c in sim.clients.items()}
    assert all(before.values())
    # c0..c9 renew at T1 + i*0.25 + a few ms; crash in the middle of that burst.
    sim.at(T1 + 1.3, lambda now: s1.crash(now))
    sim.at(T1 + 20, lambda now: s1.restart(now))
    sim.run_until(3 * LEASE)
    crash = sim.trace.of_kind("crash", "s1")
    assert len(crash) == 1 and "0 uncommitted" not in crash[0].detail
    assert "0 replies withheld" not in crash[0].detail
    after = {n: c.address for n, c in sim.clients.items()}
    assert after == before  # everyone kept their address
    for name in sim.clients:  # nobody fell back to INIT
        assert not [e for e in sim.trace.of_kind("state", name) if e.detail.endswith("-> INIT")][1:]
    assert s1.lives == 2
    assert sim.invariants.checks_run == sim.sched.steps


def test_udhcpc_profile_broadcasts_two_seconds_after_one_failed_renewal() -> None:
    sim = Simulation(3)
    sim.add_server("s1", S1, simple_config(S1, lease_s=LEASE))
    sim.add_client("u", profile=UDHCPC)
    sim.at(T1 - 5, lambda now: sim.lan.partition(["u"], ["s1"], broadcast=False, both_ways=False))
    sim.run_until(T1 + 10)
    t0 = first_bound(sim, "u")
    renew = sim.trace.dhcp("tx", src="u", state="RENEWING")
    rebind = sim.trace.dhcp("tx", src="u", state="REBINDING")
    assert len(renew) == 1 and renew[0].t == pytest.approx(t0 + T1, abs=1e-6)
    assert rebind[0].t == pytest.approx(t0 + T1 + 2, abs=1e-6) and not rebind[0].unicast
    assert sim.trace.answers_to("u")[-1].state == "REBINDING"


def test_dhclient_profile_keeps_one_xid_for_its_renewals() -> None:
    sim = Simulation(4)
    sim.add_server("s1", S1, simple_config(S1, lease_s=LEASE))
    sim.add_client("d", profile=DHCLIENT)
    sim.add_client("r")
    sim.run_until(3 * T1 + 10)
    d_xids = {e.dhcp.xid for e in sim.trace.dhcp("tx", src="d", state="RENEWING") if e.dhcp}
    r_xids = {e.dhcp.xid for e in sim.trace.dhcp("tx", src="r", state="RENEWING") if e.dhcp}
    assert len(d_xids) == 1 and len(r_xids) == 3


def test_an_hour_of_twenty_clients_takes_well_under_a_second() -> None:
    sim = world(20)
    t = time.perf_counter()
    sim.run_until(3600)
    elapsed = time.perf_counter() - t
    assert elapsed < 1.0, elapsed
    assert all(c.holds(sim.sched.now) for c in sim.clients.values())
    assert len(sim.trace.dhcp("rx", type="ACK")) >= 20 * 12


# ---------------------------------------------------------------------- invariants can fail


def _amnesiac(config: Config, store: MemoryStore, now: float) -> Stack:
    """A broken server that ignores its store on restart."""
    return Stack(Engine(config))


def test_a_server_that_forgets_acked_leases_is_caught() -> None:
    sim = Simulation(5)
    sim.add_server("s1", S1, simple_config(S1, lease_s=LEASE), factory=_amnesiac)
    sim.add_client("c0")
    s1 = sim.servers["s1"]
    sim.at(100, lambda now: s1.crash(now))
    sim.at(110, lambda now: s1.restart(now))
    with pytest.raises(InvariantViolation, match=r"seed=5 t=110\.000: s1 engine: ACK of"):
        sim.run_until(200)


def test_two_clients_believing_the_same_address_is_caught() -> None:
    sim = world(2)
    sim.run_until(30)
    a, b = sim.clients["c0"], sim.clients["c1"]
    assert a.binding is not None and b.binding is not None
    b.binding.address = a.binding.address  # corrupt one client's belief
    sim.at(31, lambda now: None)
    with pytest.raises(InvariantViolation, match=r"held by c0 .* and c1"):
        sim.run_until(40)


def test_extra_checks_run_after_every_step() -> None:
    sim = world(1)
    seen: list[float] = []

    def mclt(now: float) -> list[str]:
        seen.append(now)
        return ["lease beyond MCLT"] if now - sim.start > 100 else []

    sim.invariants.add_check("mclt", mclt)
    sim.run_until(50)
    assert len(seen) == sim.sched.steps > 5
    with pytest.raises(InvariantViolation, match="mclt: lease beyond MCLT"):
        sim.run_until(400)

"""Both servers of a pair end with the same stored PET for an address (DST seed 3051).

Two FailoverPeers wired back to back (the examples' hot-standby pair, both NORMAL), every
change committed before the bytes that follow it leave. The MCLT bound needs what a server
grants from (its stored PET, ``tsfp``, the base) to never exceed what its partner has stored;
with one update at a time that holds because a received PET replaces the receiver's and the
BNDACK makes the sender store the same value. When both send an update of one address at
the same time the two cross: each stores the other's PET and then hears the BNDACK of its
own. Replacing on that BNDACK left each side with its own PET (seed 3051: the standby 600,
the primary 653, and the primary granted up to 653 + MCLT). Both now keep the higher one.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tandem.config.validate import load
from tandem.dhcp.engine import Engine
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import META_STATE_KEY, FailoverPeer
from tandem.leases.model import BindingState, Lease
from tandem.sim import MemoryStore, build_engine
from tandem.wire.failover import MessageType, ServerState, decode
from tandem.wire.framing import FrameBuffer

T0 = 1_700_000_000.0
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ADDR = IPv4Address("192.0.2.150")
MAC = b"\x02\x00\x00\x00\x00\x07"
MCLT = 300  # the examples' MCLT


class Side:
    def __init__(self, example: str, store: MemoryStore, now: float) -> None:
        self.cfg = load(EXAMPLES / example)
        self.store = store
        engines: list[Engine] = []

        def make_engine(policy: HotStandbyPolicy) -> Engine:
            engines.append(build_engine(self.cfg, policy, store, now))
            return engines[-1]

        self.peer = FailoverPeer(self.cfg, store, now, make_engine)
        self.engine = engines[0]
        self.frames = FrameBuffer()

    def out(self) -> tuple[bytes, list[int]]:
        """This step's bytes (after its commit) and the message types in them."""
        self.store.commit(self.peer.take_changed())
        self.store.commit(self.peer.take_lazy())  # (no byte waits for these; stored here too)
        data = self.peer.data_to_send()
        return data, [decode(f).msg_type for f in self.frames.feed(data)]

    def renew(self, end: float, now: float) -> float:
        """The engine ACKs the client at ``now`` until ``end`` (what Engine._changed does);
        returns the PET this side queued for it."""
        lease = self.engine.table.get_ip(ADDR)
        assert lease is not None
        new = lease.copy()
        new.end, new.cltt = end, now
        snap = self.engine.apply(new, now)
        self.peer.policy.lease_changed(snap, now)
        self.store.commit([snap])
        return snap.tstp

    def tsfp(self) -> float:
        le = self.store.leases[ADDR]
        return le.tsfp


def _store(since: float) -> MemoryStore:
    store = MemoryStore()
    store.set_meta(META_STATE_KEY, json.dumps({"state": int(ServerState.NORMAL), "since": since}))
    store.commit([Lease(ADDR, 1, BindingState.ACTIVE, hwaddr=MAC, start=T0 - 100,
                        end=T0 + 500, cltt=T0 - 100, tstp=T0 + 800, tsfp=T0 + 800)])
    return store


def _pair() -> tuple[Side, Side, float]:
    now = T0
    p = Side("hot-standby-primary.toml", _store(T0 - 10_000), now)
    s = Side("hot-standby-standby.toml", _store(T0 - 10_000), now)
    p.peer.connection_made(now)
    s.peer.connection_made(now)
    for _ in range(200):
        now += 0.01
        for side in (p, s):
            due = side.peer.get_timer()
            if due is not None and due <= now:
                side.peer.handle_timer(now)
        a, _ = p.out()
        b, _ = s.out()
        if b:
            p.peer.receive_data(b, now)
        if a:
            s.peer.receive_data(a, now)
        if p.peer.state is s.peer.state is ServerState.NORMAL and not a and not b:
            break
    assert p.peer.state is ServerState.NORMAL and s.peer.state is ServerState.NORMAL
    return p, s, now


def _settle(p: Side, s: Side, now: float) -> float:
    for _ in range(50):
        now += 0.01
        a, _ = p.out()
        b, _ = s.out()
        if b:
            p.peer.receive_data(b, now)
        if a:
            s.peer.receive_data(a, now)
        if not a and not b:
            break
    return now


@pytest.mark.parametrize("higher", ["primary", "standby"])
@pytest.mark.parametrize("acks_first", [False, True])
def test_crossing_updates_leave_both_sides_with_the_higher_pet(
    higher: str, acks_first: bool
) -> None:
    p, s, now = _pair()
    now = _settle(p, s, now)
    # Both renew the same client at the same moment (e.g. a REQUEST broadcast while the
    # standby still answered), each with its own PET.
    hi_end, lo_end = now + 400, now + 200
    pet_p = p.renew(hi_end if higher == "primary" else lo_end, now)
    pet_s = s.renew(lo_end if higher == "primary" else hi_end, now)
    assert int(pet_p) != int(pet_s)
    a, ta = p.out()
    b, tb = s.out()
    assert ta == [MessageType.BNDUPD] and tb == [MessageType.BNDUPD]  # in flight, crossing
    now += 0.01
    # Each receives the other's BNDUPD (and answers it with a BNDACK)...
    s.peer.receive_data(a, now)
    p.peer.receive_data(b, now)
    a2, ta2 = p.out()
    b2, tb2 = s.out()
    assert ta2 == [MessageType.BNDACK] and tb2 == [MessageType.BNDACK]
    if acks_first:  # (the order of the two BNDACK deliveries must not matter)
        p.peer.receive_data(b2, now)
        s.peer.receive_data(a2, now)
    else:
        s.peer.receive_data(a2, now)
        p.peer.receive_data(b2, now)
    _settle(p, s, now)
    want = float(max(int(pet_p), int(pet_s)))
    assert p.tsfp() == s.tsfp() == want
    assert p.peer.policy.base(p.store.leases[ADDR]) == want
    assert s.peer.policy.base(s.store.leases[ADDR]) == want


def test_updates_one_at_a_time_still_replace_the_pet() -> None:
    """Seed 996 stays fixed: without a crossing, a lower PET sent later replaces the
    stored one on both sides (a grant must not build on an older, higher PET)."""
    p, s, now = _pair()
    now = _settle(p, s, now)
    pet1 = p.renew(now + 400, now)
    now = _settle(p, s, now)
    assert p.tsfp() == s.tsfp() == float(int(pet1))
    now += 1
    pet2 = p.renew(now + 50, now)  # a shorter grant: a lower PET
    assert int(pet2) < int(pet1)
    _settle(p, s, now)
    assert p.tsfp() == s.tsfp() == float(int(pet2))


def test_a_binding_sent_on_request_never_carries_a_pet_below_the_agreed_one() -> None:
    """UPDREQ/UPDREQALL answers (and restart resends) build the BNDUPD from the stored lease
    with no fresh PET: it carries max(tstp, tsfp, end), so answering a request never lowers
    the PET the two sides had agreed on (here 800, sent by the standby, above the 600 the
    primary once sent)."""
    now = T0
    pstore = MemoryStore()
    pstore.set_meta(META_STATE_KEY, json.dumps({"state": int(ServerState.NORMAL),
                                                "since": T0 - 10_000}))
    pstore.commit([Lease(ADDR, 1, BindingState.ACTIVE, hwaddr=MAC, start=T0 - 100,
                         end=T0 + 500, cltt=T0 - 100, tstp=T0 + 600, tsfp=T0 + 800)])
    p = Side("hot-standby-primary.toml", pstore, now)
    assert p.peer.stats.resent_after_restart == 0  # acknowledged: not resent at start-up
    s = Side("hot-standby-standby.toml", MemoryStore(), now)  # blank: RECOVER, UPDREQALL
    p.peer.connection_made(now)
    s.peer.connection_made(now)
    pets: list[int] = []
    asked = False
    for _ in range(3000):
        now += 0.01
        for side in (p, s):
            due = side.peer.get_timer()
            if due is not None and due <= now:
                side.peer.handle_timer(now)
        a, _ = p.out()
        b, tb = s.out()
        asked = asked or MessageType.UPDREQALL in tb
        if b:
            p.peer.receive_data(b, now)
        if a:
            before = s.peer.stats.updates_received
            s.peer.receive_data(a, now)
            if s.peer.stats.updates_received > before and ADDR in s.store.leases:
                pets.append(int(s.store.leases[ADDR].tsfp))
        if pets and not a and not b:
            break
    assert asked
    assert pets and pets[0] == int(T0 + 800)  # the agreed PET, not the older 600
    assert p.tsfp() == s.tsfp() == T0 + 800


def _ack_round(p: Side, s: Side, now: float) -> tuple[list[Lease], list[Lease]]:
    """The primary's queued BNDUPD goes to the standby (which commits and answers); the
    primary reads the BNDACK. Returns what that step of the primary's gives to commit:
    (take_changed: this step's bytes wait for them, take_lazy: nothing waits for them)."""
    a, types = p.out()
    assert MessageType.BNDUPD in types
    s.peer.receive_data(a, now)
    b, types = s.out()
    assert MessageType.BNDACK in types
    p.peer.receive_data(b, now)
    return p.peer.take_changed(), p.peer.take_lazy()


def test_an_ack_that_raises_the_pet_is_stored_lazily_and_one_that_lowers_it_is_not() -> None:
    """A BNDACK that only raises the acknowledged PET may be stored after the bytes that
    follow it (lost in a crash, the lower PET bounds grants more tightly: safe); one that
    lowers it is committed before them, like any change (seed 996's direction)."""
    p, s, now = _pair()
    now = _settle(p, s, now)
    before = p.tsfp()
    now += 1
    pet1 = p.renew(now + 2_000, now)  # a longer grant: a higher PET
    assert int(pet1) > before
    changed, lazy = _ack_round(p, s, now)
    assert [(le.address, le.tsfp) for le in lazy] == [(ADDR, float(int(pet1)))]
    assert ADDR not in {le.address for le in changed}
    p.store.commit(lazy)
    now += 1
    pet2 = p.renew(now + 50, now)  # a shorter grant: a lower PET
    assert int(pet2) < int(pet1)
    changed, lazy = _ack_round(p, s, now)
    assert [(le.address, le.tsfp) for le in changed] == [(ADDR, float(int(pet2)))]
    assert lazy == []

"""The engine's lease timers (near/far tiers, lazy deletion): the same deadlines and the
same order as one heap of (deadline, kind, address) entries, at ~8 bytes per lease."""

from __future__ import annotations

import tracemalloc
from ipaddress import IPv4Address

from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.leases.model import BindingState, Lease
from tandem.sim import simple_config
from tandem.wire.dhcp import DhcpMessage

SID = IPv4Address("192.0.2.1")
T0 = float(1_700_000_000 // 64 * 64)  # a far-tier span boundary
RX = RxInfo(src_ip=IPv4Address(0), src_port=68, local_ip=SID, to_unicast=True)


def engine(lease_s: int = 600) -> Engine:
    return Engine(simple_config(SID, lease_s=lease_s, pool=("192.0.2.10", "192.0.2.250")))


def active(last: int, end: float, state: BindingState = BindingState.ACTIVE) -> Lease:
    return Lease(IPv4Address(f"192.0.2.{last}"), 1, state, bytes([0, 1, 2, 3, 4, last]), 1,
                 None, None, T0 - 100, end, T0 - 100)


def renew(eng: Engine, last: int, now: float) -> None:
    """A RENEWING REQUEST of the client of 192.0.2.<last> (unicast, ciaddr set)."""
    m = DhcpMessage(op=1, xid=last, ciaddr=IPv4Address(f"192.0.2.{last}"),
                    chaddr=bytes([0, 1, 2, 3, 4, last]) + bytes(10), options={53: b"\x03"})
    out = eng.handle(m, RX, now)
    assert out.changed and out.changed[0].end > now


def test_equal_ends_expire_together_in_address_order_at_exactly_their_time() -> None:
    eng = engine()
    end = T0 + 64.0  # exactly on a span boundary: the tie with the far tier's bound
    eng.load([active(n, end) for n in (40, 12, 33, 20)], T0)
    assert eng.get_timer() == end
    assert eng.handle_timer(end - 0.001) == []
    changed = eng.handle_timer(end)
    assert [int(le.address) & 0xFF for le in changed] == [12, 20, 33, 40]
    assert {le.state for le in changed} == {BindingState.EXPIRED}
    assert eng.get_timer() is None


def test_deadlines_across_spans_and_abandoned_probation_in_deadline_order() -> None:
    eng = engine()
    leases = [active(10, T0 + 500.25), active(11, T0 + 3.5),
              active(12, T0 + 3.5 - 1e-6, BindingState.ABANDONED), active(13, T0 - 7.0)]
    eng.load(leases, T0)
    order = []
    while (t := eng.get_timer()) is not None:
        got = eng.handle_timer(t)
        order += [(t, int(le.address) & 0xFF, le.state) for le in got]
    assert order == [
        (T0 - 7.0, 13, BindingState.EXPIRED),
        (T0 + 3.5 - 1e-6, 12, BindingState.FREE),
        (T0 + 3.5, 11, BindingState.EXPIRED),
        (T0 + 500.25, 10, BindingState.EXPIRED),
    ]


def test_a_renewed_lease_is_not_expired_at_its_old_end() -> None:
    eng = engine(lease_s=600)
    eng.load([active(50, T0 + 10.0), active(51, T0 + 20.0)], T0)
    renew(eng, 50, T0 + 5.0)  # new end T0 + 605: another span
    renew(eng, 51, T0 + 5.5)
    renew(eng, 51, T0 + 5.75)  # renewed twice within the same span: one expiry
    assert eng.get_timer() == T0 + 605.0
    assert eng.handle_timer(T0 + 604.0) == []
    assert [int(le.address) & 0xFF for le in eng.handle_timer(T0 + 605.0)] == [50]
    assert eng.get_timer() == T0 + 605.75
    assert [int(le.address) & 0xFF for le in eng.handle_timer(T0 + 10_000)] == [51]
    assert eng.stats["expired"] == 2


def test_lease_timers_cost_about_one_pointer_per_lease() -> None:
    """The old heap held a (deadline, kind, address) tuple per ACTIVE lease: 72 bytes with
    its list slot. Distinct ends (one every 0.37 s) are the unfavourable case."""
    n = 20_000
    leases = [Lease(IPv4Address(0x0A000100 + i), 1, BindingState.ACTIVE, bytes(6), 1, None,
                    None, T0, T0 + 86_400 + i * 0.37, T0) for i in range(n)]
    eng = Engine(simple_config("10.0.0.1", prefix="10.0.0.0/8",
                               pool=("10.0.0.10", "10.255.255.250")))
    tracemalloc.start()
    try:
        eng.load(leases, T0)
        snap = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    in_engine = sum(s.size for s in snap.statistics("filename")
                    if s.traceback[0].filename.endswith("dhcp/engine.py"))
    assert in_engine / n < 20, f"{in_engine / n:.1f} bytes per lease in engine.py"
    assert eng.get_timer() == T0 + 86_400

"""A restarted server sends the bindings its partner never acknowledged (draft-12 §7.1.1),
without waiting for an UPDREQ.

Found by tests/e2e/test_crash_loop.py: a lease the primary committed and ACKed just before
kill -9, its BNDUPD still in the in-RAM update queue, never reached the standby after the
restart. The store marks such a binding unacknowledged (tstp > tsfp); the peer now queues
every such binding at start-up (as ISC does), with a PET never below what the partner may
already hold (docs/reliability.md, "Unacknowledged bindings after a restart").

Here, in virtual time on the DST pair: the failover link is partitioned (TCP-like: bytes
held back), a client gets its lease from the primary, the primary is killed (the held
BNDUPD dies with the connection), restarts, the link heals. The standby, in
COMMUNICATIONS-INTERRUPTED, never sends UPDREQ; it must still learn the lease before the
client's first renewal would have told it.
"""

from __future__ import annotations

import math

import pytest

from tandem.errors import DecodeError
from tandem.failover.peer import FailoverPeer
from tandem.leases.model import BindingState
from tandem.sim.faults import DstRun, Fault, Schedule
from tandem.wire.failover import MessageType, ServerState, decode
from tandem.wire.framing import FrameBuffer

PARTITION, CLIENT, CRASH, BACK = 125.0, 130.0, 132.0, 145.0
T1 = CLIENT + 30  # MCLT 60: the new lease is 60 s, its first renewal at 30 s


def _names(data: bytes) -> str:
    fb = FrameBuffer()
    try:
        out = []
        for frame in fb.feed(data):
            t = decode(frame).msg_type
            out.append(t.name if isinstance(t, MessageType) else str(t))
        return " ".join(out) or f"{len(data)} B (partial)"
    except DecodeError as exc:
        return f"{len(data)} B ({exc})"


def _run() -> DstRun:
    sc = Schedule(
        seed=7,
        mclt_s=60,
        lease_s=240,
        clients=1,
        client_starts=[CLIENT],
        fault_end=300.0,
        quiet_s=420.0,
        faults=[
            Fault(PARTITION, "link-partition", "link", BACK - PARTITION),
            Fault(CRASH, "crash", "p", BACK - 5 - CRASH),  # restarts at 140, link heals at 145
        ],
    )
    run = DstRun(sc)
    run.link.describe = _names
    return run


def test_a_restarted_primarys_unacknowledged_binding_reaches_the_standby_without_updreq() -> None:
    run = _run()
    sim = run.sim
    sim.run_until(CRASH - 0.5)
    c = run.clients[0]
    b = c.holds(sim.sched.now)
    assert b is not None and b.server_id == run.p.ip  # ACKed by the primary...
    le = run.p.store.leases[b.address]
    assert le.state is BindingState.ACTIVE  # ...committed, not acknowledged by the standby:
    assert math.floor(le.tstp) > le.tsfp
    assert b.address not in run.s.store.leases  # its BNDUPD is held in the partitioned link
    sim.run_until(BACK - 0.5)
    s_peer = run.s.peer
    assert isinstance(s_peer, FailoverPeer)
    assert s_peer.state is ServerState.COMMUNICATIONS_INTERRUPTED
    sim.run_until(BACK + 5)
    # The pair talks again; the standby came from COMMUNICATIONS-INTERRUPTED and asked nothing.
    s_sent = " ".join(e.detail for e in sim.trace.of_kind("peer-tx", "s") if e.t >= BACK)
    assert "UPDREQ" not in s_sent, s_sent
    p_peer = run.p.peer
    assert isinstance(p_peer, FailoverPeer) and p_peer.stats.resent_after_restart == 1
    # The standby now holds the lease, for the same client, at least until the client's end.
    got = run.s.store.leases.get(b.address)
    assert got is not None and got.state is BindingState.ACTIVE, got
    assert got.hwaddr == c.hwaddr and got.end >= b.end - 1e-6
    assert got.tsfp >= le.tstp - 1  # the PET the primary committed (whole seconds)
    # ... and the primary holds its BNDACK (acknowledged: no longer resent).
    now_p = run.p.store.leases[b.address]
    assert math.floor(now_p.tstp) <= now_p.tsfp  # PETs travel in whole seconds
    assert sim.sched.now < sim.start + T1  # before any renewal could have carried it
    assert p_peer.state is ServerState.NORMAL and s_peer.state is ServerState.NORMAL
    run.run()  # the invariants (MCLT bound included) hold to the end, and liveness
    assert run.liveness_problems() == []


def test_without_the_resend_the_standby_would_not_know_the_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scenario really depends on the start-up resend (the check above can fail)."""
    monkeypatch.setattr(FailoverPeer, "_queue_unacknowledged", lambda self, now: None)
    run = _run()
    run.sim.run_until(BACK + 5)
    b = run.clients[0].holds(run.sim.sched.now)
    assert b is not None
    assert b.address not in run.s.store.leases

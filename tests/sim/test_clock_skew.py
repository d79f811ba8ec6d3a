"""Clock skew between the partners, in virtual time with the reference hot-standby pair
(examples/hot-standby-*.toml, ISC dialect, max_clock_skew_s = 60).

The standby's clock is stepped while the pair runs; the link is reset so that a new
CONNECT carries the skewed time. Beyond the tolerance the standby refuses the CONNECT with
reject reason 4 (time mismatch too great, failover-protocol.md §6.5), the primary sees the
refusal, both stay apart and keep retrying; when the clocks agree again the next attempt
succeeds and the pair is back in NORMAL -- no restart. Below the limit but above the warning
threshold (half the limit) the skew is measured, exported and warned about.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from tandem.config.schema import Config
from tandem.config.validate import load
from tandem.failover.events import ConnectionClosed, SkewWarning
from tandem.failover.peer import FailoverPeer
from tandem.sim import Simulation
from tandem.sim.faults import failover_stack
from tandem.wire.failover import RejectReason, ServerState

S = ServerState
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SETTLED = 400.0


def _config(name: str) -> Config:
    return load(EXAMPLES / name)


_factory = failover_stack  # engine + FailoverPeer around its policy, as the service builds them


class Pair:
    def __init__(self) -> None:
        self.sim = Simulation(7)
        self.p = self.sim.add_server("p", IPv4Address("192.0.2.2"),
                                     _config("hot-standby-primary.toml"), factory=_factory)
        self.s = self.sim.add_server("s", IPv4Address("192.0.2.3"),
                                     _config("hot-standby-standby.toml"), factory=_factory)
        self.link = self.sim.link_peers("p", "s")
        self.sim.run_until(SETTLED)
        assert self.state("p") is S.NORMAL and self.state("s") is S.NORMAL

    def peer(self, name: str) -> FailoverPeer:
        peer = self.sim.servers[name].peer
        assert isinstance(peer, FailoverPeer)
        return peer

    def state(self, name: str) -> ServerState:
        return self.peer(name).state

    def reset_link_at(self, t: float) -> None:
        self.sim.at(t, lambda now: self.link.close(None, now, "test: link reset"), "reset")

    def refusals(self, name: str) -> list[ConnectionClosed]:
        return [
            e for e in self.peer(name).events
            if isinstance(e, ConnectionClosed) and e.reject_reason == RejectReason.TIME_MISMATCH
        ]


def test_skew_beyond_tolerance_refuses_with_reason_4_and_recovers_without_restart() -> None:
    pair = Pair()
    pair.sim.at(SETTLED + 10, lambda now: pair.s.set_clock(120.0, now), "skew +120 s")
    pair.reset_link_at(SETTLED + 11)
    pair.sim.run_until(SETTLED + 100)
    # every reconnection attempt is refused with reason 4, on both sides
    s_ref = pair.refusals("s")
    assert len(s_ref) >= 5  # one per attempt (the link retries every 5 s)
    assert all(not e.by_peer for e in s_ref)  # the standby (it received the CONNECT) refuses
    assert "clock skew -120 s" in s_ref[0].reason
    # the primary's attempts all end without a handshake (the simulator's link drops the
    # CONNECTACK in flight when the refusing side closes; on TCP it arrives: see
    # test_failover_connection's reason-4 tests)
    p_closed = [e for e in pair.peer("p").events
                if isinstance(e, ConnectionClosed) and e.by_peer]
    assert len(p_closed) >= 5
    assert pair.state("p") is S.COMMUNICATIONS_INTERRUPTED
    assert pair.state("s") is S.COMMUNICATIONS_INTERRUPTED
    assert not pair.link.connected or not pair.peer("s").m.connected
    # clocks agree again: the next attempt succeeds, both back in NORMAL, nobody restarted
    pair.sim.at(SETTLED + 100, lambda now: pair.s.set_clock(0.0, now), "clock fixed")
    pair.sim.run_until(SETTLED + 200)
    assert pair.state("p") is S.NORMAL and pair.state("s") is S.NORMAL
    assert pair.p.lives == 1 and pair.s.lives == 1
    refused = len(pair.refusals("s"))
    pair.sim.run_until(SETTLED + 300)
    assert len(pair.refusals("s")) == refused  # no refusal since
    conn = pair.peer("s").conn
    assert conn is not None and conn.established
    skew = conn.clock_skew_s
    assert skew is not None and abs(skew) < 1.0


def test_skew_below_the_limit_is_measured_and_warned_before_the_limit() -> None:
    pair = Pair()
    pair.sim.at(SETTLED + 10, lambda now: pair.s.set_clock(40.0, now), "skew +40 s")
    pair.reset_link_at(SETTLED + 11)
    pair.sim.run_until(SETTLED + 100)
    assert pair.refusals("s") == [] and pair.refusals("p") == []
    assert pair.state("p") is S.NORMAL and pair.state("s") is S.NORMAL
    # the standby sees the primary 40 s behind it; the primary sees the standby 40 s ahead
    s_conn, p_conn = pair.peer("s").conn, pair.peer("p").conn
    assert s_conn is not None and p_conn is not None
    assert s_conn.clock_skew_s is not None and abs(s_conn.clock_skew_s + 40.0) < 1.5
    assert p_conn.clock_skew_s is not None and abs(p_conn.clock_skew_s - 40.0) < 1.5
    # 40 s is above the warning threshold (half of 60 s): one warning per side, not per message
    s_warn = [e for e in pair.peer("s").events if isinstance(e, SkewWarning)]
    p_warn = [e for e in pair.peer("p").events if isinstance(e, SkewWarning)]
    assert len(s_warn) == 1 and len(p_warn) == 1
    assert s_warn[0].limit_s == 30.0

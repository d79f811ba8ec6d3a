"""Failover link security at the FailoverPeer level (the engine and the store behind it):

* with a shared secret, a message whose digest is missing or wrong closes the connection with
  its reject reason and changes nothing: no lease, no commit, no state;
* replays (docs/decisions.md, "Failover security"): with a secret a message must carry an xid
  above the last one the partner originated on this connection and a time within
  ``max_clock_skew_s`` of ours, so a replayed or stale message closes the link and changes
  nothing; without a secret a BNDUPD applied twice, or an older one replayed after a newer
  one, does not change the lease either (the binding rules judge by CLTT/end).
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

import pytest
from _fuzz import targets

from tandem.dhcp.engine import Engine
from tandem.failover.hot_standby import HotStandbyPolicy
from tandem.failover.peer import FailoverPeer
from tandem.failover.updates import BindingUpdate
from tandem.leases.model import Lease
from tandem.sim import MemoryStore, build_engine
from tandem.wire.failover import (
    BindingStatus,
    FailoverMessage,
    HardwareAddress,
    MessageType,
    OptionCode,
    RejectReason,
    ServerState,
    decode,
    encode,
)
from tandem.wire.framing import FrameBuffer

T = targets.T0
SECRET = targets.SECRET
ADDR = IPv4Address("192.0.2.20")
MAC = bytes.fromhex("020000000042")
OC = OptionCode
RR = RejectReason


class Standby:
    """A standby FailoverPeer whose partner (the test) has done the handshake."""

    def __init__(self, secret: bytes | None) -> None:
        self.config = targets.peer_config(secret.decode() if secret else None)
        self.store = MemoryStore()
        self.now = T

        def make_engine(policy: HotStandbyPolicy) -> Engine:
            return build_engine(self.config, policy, self.store, T)

        self.peer = FailoverPeer(self.config, self.store, T, make_engine)
        self.peer.connection_made(T)
        self.secret = secret
        self.xid = 2
        self.feed(targets.connect_frame("fuzz", 300, T, "isc", secret, xid=1)
                  + targets.state_frame(T, "isc", secret, xid=2))
        assert self.peer.conn is not None and self.peer.conn.communications_ok
        self.sent()

    def feed(self, data: bytes, dt: float = 1.0) -> None:
        self.now += dt
        self.peer.receive_data(data, self.now)
        changed = self.peer.take_changed() + self.peer.take_lazy()
        if changed:
            self.store.commit(changed)

    def sent(self) -> list[FailoverMessage]:
        return [decode(f) for f in FrameBuffer().feed(self.peer.data_to_send())]

    def bndupd(self, end_s: int, cltt_s: int = 0, *, secret: Any = "same",
               xid: int | None = None, time: float | None = None) -> bytes:
        if xid is None:
            self.xid += 1
            xid = self.xid
        upd = BindingUpdate(
            address=ADDR, binding_status=BindingStatus.ACTIVE, hwaddr=HardwareAddress(1, MAC),
            lease_expiration=int(T) + end_s, potential_expiration=int(T) + end_s + 300,
            start_time_of_state=int(T) + cltt_s, cltt=int(T) + cltt_s,
        )
        msg = FailoverMessage(MessageType.BNDUPD, xid,
                              int(self.now if time is None else time), list(upd.to_options()))
        return encode(msg, "isc", secret=self.secret if secret == "same" else secret)

    def snapshot(self) -> tuple[Any, ...]:
        table = sorted(repr(le) for le in self.peer.engine.table)
        return (table, dict(self.store.leases), self.store.commits, self.peer.state,
                self.peer.stats.updates_accepted)

    def lease(self) -> Lease | None:
        return self.peer.engine.table.get_ip(ADDR)

    def assert_closed_with(self, reason: int) -> None:
        assert self.peer.close_requested()
        assert self.peer.conn is not None and self.peer.conn.closed
        out = self.sent()
        assert out and out[-1].msg_type == MessageType.DISCONNECT, out
        assert out[-1].get_int(OC.REJECT_REASON) == reason
        assert not [m for m in out if m.msg_type == MessageType.BNDACK]


def _strip_digest(frame: bytes) -> bytes:
    msg = decode(frame)
    msg.options = [o for o in msg.options if o.code != OC.MESSAGE_DIGEST]
    return encode(msg, "isc")


def _flip_digest_bit(frame: bytes) -> bytes:
    return frame[:-1] + bytes((frame[-1] ^ 1,))  # the digest is the last option


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        (lambda s: s.bndupd(600, secret=None), RR.MISSING_DIGEST),
        (lambda s: _strip_digest(s.bndupd(600)), RR.MISSING_DIGEST),
        (lambda s: s.bndupd(600, secret=b"not the secret"), RR.DIGEST_MISMATCH),
        (lambda s: _flip_digest_bit(s.bndupd(600)), RR.DIGEST_MISMATCH),
    ],
    ids=["unsigned", "digest-removed", "other-secret", "digest-bit-flipped"],
)
def test_bndupd_with_a_missing_or_wrong_digest_closes_and_changes_nothing(
    forge: Any, reason: int
) -> None:
    s = Standby(SECRET)
    frame = forge(s)
    assert decode(frame).get(OC.ASSIGNED_IP_ADDRESS) == ADDR  # the forgery is well-formed
    before = s.snapshot()
    s.feed(frame)
    s.assert_closed_with(reason)
    assert s.snapshot() == before
    assert s.lease() is None or s.lease().hwaddr != MAC  # type: ignore[union-attr]


def test_the_same_bndupd_correctly_signed_is_applied() -> None:
    """The control for the test above: only the digest made the difference."""
    s = Standby(SECRET)
    s.feed(s.bndupd(600))
    lease = s.lease()
    assert lease is not None and lease.hwaddr == MAC and lease.end == T + 600
    assert ADDR in s.store.leases
    (ack,) = [m for m in s.sent() if m.msg_type == MessageType.BNDACK]
    assert ack.get_int(OC.REJECT_REASON) is None


def test_state_with_a_wrong_digest_does_not_move_us() -> None:
    s = Standby(SECRET)
    before = s.snapshot()
    s.xid += 1
    forged = FailoverMessage(MessageType.STATE, s.xid, int(s.now), [])
    forged.add(OC.SERVER_STATE, ServerState.SHUTDOWN)
    forged.add(OC.SERVER_FLAGS, 0)
    forged.add(OC.START_TIME_OF_STATE, int(s.now))
    s.feed(encode(forged, "isc", secret=b"guess"))
    s.assert_closed_with(RR.DIGEST_MISMATCH)
    assert s.snapshot()[:4] == before[:4]
    assert s.peer.conn is not None and s.peer.conn.partner_state is not None
    assert s.peer.conn.partner_state.state == ServerState.NORMAL


def test_replayed_acked_bndupd_with_a_secret_closes_and_changes_nothing() -> None:
    s = Standby(SECRET)
    first = s.bndupd(600)
    s.feed(first)
    s.feed(s.bndupd(1200, cltt_s=60))  # the client renewed
    assert s.lease() is not None and s.lease().end == T + 1200  # type: ignore[union-attr]
    s.sent()
    before = s.snapshot()
    s.feed(first)  # byte-for-byte replay of the acked BNDUPD: valid digest, old xid
    s.assert_closed_with(RR.DIGEST_MISMATCH)
    assert s.snapshot() == before


def test_duplicate_xid_with_fresh_content_is_refused_with_a_secret() -> None:
    s = Standby(SECRET)
    s.feed(s.bndupd(600))
    s.sent()
    before = s.snapshot()
    s.feed(s.bndupd(1200, cltt_s=60, xid=s.xid))  # re-signed, but the xid was used
    s.assert_closed_with(RR.DIGEST_MISMATCH)
    assert s.snapshot() == before


@pytest.mark.parametrize("offset_s", [-3600.0, -61.0, 61.0, 86400.0])
def test_stale_signed_message_is_refused_and_changes_nothing(offset_s: float) -> None:
    s = Standby(SECRET)
    before = s.snapshot()
    s.feed(s.bndupd(600, time=s.now + 1 + offset_s))  # new xid, valid digest, old/future time
    s.assert_closed_with(RR.TIME_MISMATCH)
    assert s.snapshot() == before


def test_signed_message_within_the_skew_tolerance_is_accepted() -> None:
    s = Standby(SECRET)
    s.feed(s.bndupd(600, time=s.now + 1 - 59))
    assert s.lease() is not None and s.lease().hwaddr == MAC  # type: ignore[union-attr]
    assert not s.peer.close_requested()


def test_without_a_secret_a_bndupd_applied_twice_changes_nothing_more() -> None:
    s = Standby(None)
    frame = s.bndupd(600)
    s.feed(frame)
    after_first = s.lease()
    leases = dict(s.store.leases)
    s.feed(frame)  # a duplicate (same xid, acked already): accepted again, same binding
    assert not s.peer.close_requested()
    assert s.lease() == after_first
    assert s.store.leases == leases


def test_without_a_secret_an_older_bndupd_replayed_does_not_shorten_the_lease() -> None:
    """Without a secret nothing tells a replay from the partner's own word: the draft's
    conflict table accepts an ACTIVE for the same client (its CLTT comes along), but the
    lease end we hold is never shortened."""
    s = Standby(None)
    old = s.bndupd(600)
    s.feed(old)
    s.feed(s.bndupd(1200, cltt_s=60))
    newer = s.lease()
    assert newer is not None and newer.end == T + 1200
    s.sent()
    s.feed(replace_xid(old, s.xid + 1))  # the old binding again, under a new xid
    lease = s.lease()
    assert lease is not None and lease.end == T + 1200 and lease.hwaddr == MAC
    assert s.store.leases[ADDR].end == T + 1200


def replace_xid(frame: bytes, xid: int) -> bytes:
    msg = decode(frame)
    return encode(replace(msg, xid=xid) if hasattr(msg, "__dataclass_fields__")
                  else FailoverMessage(msg.msg_type, xid, msg.time, msg.options), "isc")

"""A BNDUPD is encoded once: when queued (the validation), and the bytes kept for the send.

The send patches the xid and the time into the kept bytes; the result must be exactly what
``encode`` makes of the message with that xid and time (with a shared secret the message
is encoded again and signed at send time). An update that cannot be encoded still fails at
``queue_binding_update``, with nothing queued.

The BNDACK of one accepted address (unsigned) is written from a template with the time, xid
and address patched in: it too must equal ``encode`` of the message, and every other BNDACK
(rejects, several addresses, a shared secret) still goes through ``encode``.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_failover_connection import SECRET, T, cfg, connected_pair, exchange, of, upd

import tandem.failover.connection as connection_mod
from tandem.failover.connection import Dialect, PeerConnection
from tandem.failover.events import BindingUpdateReceived
from tandem.failover.updates import BindingUpdate
from tandem.wire.failover import (
    FailoverMessage,
    MessageType,
    OptionCode,
    ServerState,
    decode,
    encode,
)
from tandem.wire.framing import FrameBuffer


@pytest.mark.parametrize("dialect", ["isc", "windows"])
@pytest.mark.parametrize("secret", [None, SECRET])
def test_sent_bndupds_are_byte_identical_to_a_full_encode(
    dialect: Dialect, secret: bytes | None
) -> None:
    kw: dict[str, Any] = {"shared_secret": secret}
    p, s = connected_pair(dialect, p_kw=kw, s_kw=kw)
    now = T + 5.7
    updates = [upd(n, dialect) for n in (3, 4, 5)]
    for u in updates:
        p.queue_binding_update(u, now)
    frames = FrameBuffer().feed(p.data_to_send())
    assert len(frames) == 3
    xids = set()
    for frame, u in zip(frames, updates, strict=True):
        msg = decode(frame, dialect)
        assert msg.msg_type == MessageType.BNDUPD and msg.time == int(now)
        xids.add(msg.xid)
        again = encode(
            type(msg)(MessageType.BNDUPD, msg.xid, msg.time, u.to_options()),
            dialect,
            secret=secret,
        )
        assert bytes(frame) == again
    assert len(xids) == 3
    events = s.receive_data(b"".join(bytes(f) for f in frames), now)  # digest checked
    assert [e.update.address for e in of(events, BindingUpdateReceived)] == [
        u.address for u in updates
    ]


def test_a_bndupd_is_encoded_once_without_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    p, _s = connected_pair()
    calls: list[int] = []
    real = connection_mod.encode

    def counting(msg: Any, *args: Any, **kwargs: Any) -> bytes:
        if msg.msg_type == MessageType.BNDUPD:
            calls.append(msg.xid)
        return real(msg, *args, **kwargs)

    monkeypatch.setattr(connection_mod, "encode", counting)
    for n in range(1, 11):
        p.queue_binding_update(upd(n), T)
    assert len(FrameBuffer().feed(p.data_to_send())) == 10
    assert len(calls) == 10  # one encode per BNDUPD (it was two)


def test_an_update_that_cannot_be_encoded_is_refused_when_queued() -> None:
    p, _s = connected_pair()
    bad = BindingUpdate(address=upd(1).address, binding_status=1, lease_expiration=2**40)
    with pytest.raises(ValueError):
        p.queue_binding_update(bad, T)
    assert p.updates.pending_count == 0 and p.updates.in_flight_count == 0
    assert p.data_to_send() == b""


def test_a_requeued_update_is_resent_with_a_new_xid_and_the_same_content() -> None:
    p, _s = connected_pair()
    p.queue_binding_update(upd(7), T)
    first = decode(FrameBuffer().feed(p.data_to_send())[0])
    p.connection_lost(T + 1)  # the queue puts the un-ACKed update back at the head
    assert p.updates.pending_count == 1
    # The next connection shares the queue (as FailoverPeer does) and resends it.
    now = T + 2
    p2 = PeerConnection(cfg("primary"), now, p.updates)
    s2 = PeerConnection(cfg("secondary"), now)
    p2.send_state(ServerState.NORMAL, int(now) - 100, now)
    s2.send_state(ServerState.NORMAL, int(now) - 50, now)
    s2.initiate(now)
    p2.initiate(now)
    _ev_p, ev_s = exchange(p2, s2, now)
    (got,) = of(ev_s, BindingUpdateReceived)
    assert got.update == upd(7) and first.options == upd(7).to_options()
    assert p2.updates.in_flight_update(got.xid) == upd(7)


@pytest.mark.parametrize("dialect", ["isc", "windows"])
@pytest.mark.parametrize("secret", [None, SECRET])
@pytest.mark.parametrize("reject", [None, 3])
def test_sent_bndacks_are_byte_identical_to_a_full_encode(
    dialect: Dialect, secret: bytes | None, reject: int | None
) -> None:
    kw: dict[str, Any] = {"shared_secret": secret}
    p, s = connected_pair(dialect, p_kw=kw, s_kw=kw)
    now = T + 9.3
    updates = [upd(n, dialect) for n in (200, 17, 255)]  # addresses ending .200, .17, .255
    for u in updates:
        p.queue_binding_update(u, now)
    received = of(s.receive_data(p.data_to_send(), now), BindingUpdateReceived)
    assert len(received) == 3
    later = now + 2.6
    for ev in received:
        if reject is None:
            s.ack_binding_update(ev.xid, now=later)
        else:
            s.ack_binding_update(ev.xid, reject, message="no", now=later)
    frames = FrameBuffer().feed(s.data_to_send())
    assert len(frames) == 3
    for frame, ev in zip(frames, received, strict=True):
        expected = FailoverMessage(MessageType.BNDACK, ev.xid, int(later))
        expected.add(OptionCode.ASSIGNED_IP_ADDRESS, ev.update.address)
        if reject is not None:
            expected.add(OptionCode.REJECT_REASON, reject)
            expected.add(OptionCode.MESSAGE, "no")
        assert bytes(frame) == encode(expected, dialect, secret=secret)
    acked = p.receive_data(b"".join(bytes(f) for f in frames), later)  # digest checked
    assert sorted(str(e.address) for e in acked if hasattr(e, "reject_reason")) == sorted(
        str(u.address) for u in updates
    )


def test_a_batched_bndack_lists_its_addresses_in_order() -> None:
    """Several addresses in one BNDUPD (the Windows dialect): not the one-address template."""
    _p, s = connected_pair("windows")
    msg = FailoverMessage(MessageType.BNDUPD, 77, int(T))
    for n in (4, 9):
        msg.options.extend(upd(n, "windows").to_options())
    received = of(s.receive_data(encode(msg, "windows"), T), BindingUpdateReceived)
    assert [e.xid for e in received] == [77, 77]
    s.ack_binding_update(77, now=T)
    (frame,) = FrameBuffer().feed(s.data_to_send())
    ack = decode(frame, "windows")
    assert ack.get_all(OptionCode.ASSIGNED_IP_ADDRESS) == [upd(4).address, upd(9).address]

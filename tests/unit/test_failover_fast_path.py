"""The connection's fast path for the common BNDUPD and BNDACK gives what the general path
gives.

``decode_one_group`` decodes a message of one address group straight to its values and
returns ``None`` for anything else; ``PeerConnection`` then takes the general path (decode,
batching rules, ``BindingUpdate.from_group``). Checked here, differentially:

* on valid messages and on random mutations of them (truncated, flipped bytes, repeated,
  unknown or signed options, other message types), whatever the fast decoder accepts the
  general decoder accepts too, with the same header and the same update;
* two connections fed the same byte stream, one with the fast path and one without, emit the
  same events and the same bytes, and close for the same reason.
"""

from __future__ import annotations

import contextlib
import struct
from ipaddress import IPv4Address
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_failover_connection import T, connected_pair, upd

from tandem.failover.connection import Dialect
from tandem.failover.events import BindingUpdateReceived
from tandem.failover.updates import NAMED_CODES, BindingUpdate
from tandem.wire.failover import (
    BindingStatus,
    DecodeError,
    FailoverMessage,
    HardwareAddress,
    MessageType,
    Option,
    OptionCode,
    batch_violation,
    decode,
    decode_one_group,
    encode,
)

BNDACK_CODES = frozenset(
    (
        int(OptionCode.ASSIGNED_IP_ADDRESS),
        int(OptionCode.REJECT_REASON),
        int(OptionCode.MESSAGE),
    )
)


def general(frame: bytes, dialect: Dialect) -> tuple[int, int, int, BindingUpdate | str] | None:
    """What the general path makes of a single-group BNDUPD, or None when it would not take
    it as one (malformed, batch rules, more than one group)."""
    try:
        msg = decode(frame, dialect)
    except DecodeError:
        return None
    if batch_violation(msg, dialect) is not None:
        return None
    head, groups = msg.address_groups()
    if head or len(groups) != 1:
        return None
    try:
        update: BindingUpdate | str = BindingUpdate.from_group(groups[0])
    except ValueError as exc:
        update = str(exc)
    return int(msg.msg_type), msg.time, msg.xid, update


def fast(frame: bytes, dialect: Dialect) -> tuple[int, int, int, BindingUpdate | str] | None:
    got = decode_one_group(frame, dialect, NAMED_CODES)
    if got is None:
        return None
    mtype, time_, xid, values = got
    try:
        update: BindingUpdate | str = BindingUpdate.from_values(values)
    except ValueError as exc:
        update = str(exc)
    return mtype, time_, xid, update


updates = st.builds(
    BindingUpdate,
    address=st.integers(0, 2**32 - 1).map(IPv4Address),
    binding_status=st.sampled_from([int(s) for s in BindingStatus]),
    hwaddr=st.none() | st.binary(min_size=0, max_size=16).map(lambda b: HardwareAddress(1, b)),
    client_id=st.none() | st.binary(min_size=1, max_size=40),
    lease_expiration=st.none() | st.integers(0, 2**32 - 1),
    potential_expiration=st.none() | st.integers(0, 2**32 - 1),
    start_time_of_state=st.none() | st.integers(0, 2**32 - 1),
    cltt=st.none() | st.integers(0, 2**32 - 1),
    ip_flags=st.none() | st.integers(0, 2**16 - 1),
)


def bndupd(update: BindingUpdate, xid: int, time_: int, dialect: Dialect = "isc") -> bytes:
    return encode(FailoverMessage(MessageType.BNDUPD, xid, time_, update.to_options()), dialect)


@settings(max_examples=300, deadline=None)
@given(updates, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_a_valid_bndupd_takes_the_fast_path_with_the_same_update(
    update: BindingUpdate, xid: int, time_: int
) -> None:
    frame = bndupd(update, xid, time_)
    got = fast(frame, "isc")
    assert got is not None
    assert got == general(frame, "isc") == (int(MessageType.BNDUPD), time_, xid, update)


def _mutate(frame: bytes, data: st.DataObject) -> bytes:
    b = bytearray(frame)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "option", "dup", "type"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        b = b[: data.draw(st.integers(0, len(b) - 1))]
    elif kind == "extend":
        b += data.draw(st.binary(min_size=1, max_size=12))
    elif kind == "option":  # any option appended (unknown, digest, reject reason, ...)
        code = data.draw(st.integers(0, 300))
        value = data.draw(st.binary(max_size=8))
        b += struct.pack("!HH", code, len(value)) + value
    elif kind == "dup":  # the first option again, or a second address group
        olen = struct.unpack_from("!H", b, 14)[0]
        b += b[12 : 16 + olen]
    else:
        b[2] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()) and len(b) >= 2:
        struct.pack_into("!H", b, 0, len(b))  # keep the length field consistent
    return bytes(b)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(updates, st.sampled_from(["isc", "windows"]), st.data())
def test_what_the_fast_decoder_accepts_the_general_one_reads_the_same(
    update: BindingUpdate, dialect: Dialect, data: st.DataObject
) -> None:
    frame = _mutate(bndupd(update, 7, int(T), "isc"), data)
    got = fast(frame, dialect)
    if got is not None:
        assert got == general(frame, dialect)


def _two_groups(first: bytes, second: bytes) -> bytes:
    b = bytearray(first + second[12:])
    struct.pack_into("!H", b, 0, len(b))
    return bytes(b)


@pytest.mark.parametrize(
    "frame_of",
    [
        # a signed BNDUPD (message digest), an unknown option, two address groups
        lambda u: encode(FailoverMessage(MessageType.BNDUPD, 5, int(T), u.to_options()),
                         secret=b"k" * 16),
        lambda u: encode(FailoverMessage(MessageType.BNDUPD, 5, int(T),
                                         [*u.to_options(), Option(250, b"x")])),
        lambda u: _two_groups(bndupd(u, 5, int(T)), bndupd(upd(9), 6, int(T))),
    ],
)
def test_other_shapes_take_the_general_path(frame_of: Any) -> None:
    assert decode_one_group(frame_of(upd(3)), "isc", NAMED_CODES) is None


def _bndack(xid: int, address: IPv4Address, reject: int | None, text: str | None) -> bytes:
    msg = FailoverMessage(MessageType.BNDACK, xid, int(T))
    msg.add(OptionCode.ASSIGNED_IP_ADDRESS, address)
    if reject is not None:
        msg.add(OptionCode.REJECT_REASON, reject)
    if text is not None:
        msg.add(OptionCode.MESSAGE, text)
    return encode(msg)


def test_a_bndack_takes_the_fast_path_with_its_reject_reason() -> None:
    got = decode_one_group(_bndack(4, upd(3).address, 3, "no\x00"), "isc", BNDACK_CODES)
    assert got is not None
    mtype, _time, xid, values = got
    assert (mtype, xid) == (int(MessageType.BNDACK), 4)
    assert values == {2: upd(3).address, int(OptionCode.REJECT_REASON): 3,
                      int(OptionCode.MESSAGE): "no\x00"}


# ------------------------------------------------------------------ whole connections


def _inflight_xid(dialect: Dialect) -> int:
    p, _s = connected_pair(dialect)
    p.queue_binding_update(upd(3, dialect), T + 1)
    (xid,) = [x for x in range(1, 1000) if p.updates.in_flight_update(x) is not None]
    return xid


def _run(frames: list[bytes], fast_path: bool, dialect: Dialect) -> list[Any]:
    """Feed ``frames`` (each as its own read) to an established secondary and an
    established primary with one update in flight; record what each does."""
    out: list[Any] = []
    p, s = connected_pair(dialect)
    p.queue_binding_update(upd(3, dialect), T + 1)
    p.data_to_send()
    for conn in (s, p):
        conn._fast = fast_path
        for i, frame in enumerate(frames):
            if conn.closed:
                break
            events = conn.receive_data(frame, T + 2 + i)
            if not conn.closed:
                # answer every BNDUPD as the peer would after its commit
                for ev in events:
                    if isinstance(ev, BindingUpdateReceived):
                        with contextlib.suppress(ValueError):
                            conn.ack_binding_update(ev.xid, now=T + 2 + i)
            out.append([repr(e) for e in events])
            out.append(conn.data_to_send())
        out.append((conn.closed, conn.link_state))
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["isc", "windows"]), st.data())
def test_connections_with_and_without_the_fast_path_behave_the_same(
    dialect: Dialect, data: st.DataObject
) -> None:
    frames: list[bytes] = []
    inflight = _inflight_xid(dialect)
    for _ in range(data.draw(st.integers(1, 5))):
        u = upd(data.draw(st.sampled_from([3, 3, 4]) | st.integers(1, 250)), dialect)
        base = data.draw(st.sampled_from(["bndupd", "bndack"]))
        if base == "bndupd":
            frame = bndupd(u, data.draw(st.integers(1, 2**32 - 1)), int(T) + 2, dialect)
        else:
            frame = _bndack(data.draw(st.sampled_from([inflight, inflight, inflight + 1, 99])),
                            u.address,
                            data.draw(st.none() | st.integers(0, 255)),
                            data.draw(st.none() | st.text(max_size=5)))
        if data.draw(st.booleans()):
            frame = _mutate(frame, data)
        frames.append(frame)
    assert _run(frames, True, dialect) == _run(frames, False, dialect)


def test_the_fast_path_is_taken_for_plain_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not just equal: the general decoder is not called for a plain BNDUPD and BNDACK."""
    import tandem.failover.connection as connection_mod

    p, s = connected_pair()
    calls: list[int] = []
    real = connection_mod.decode

    def counting(frame: Any, *args: Any, **kwargs: Any) -> FailoverMessage:
        calls.append(1)
        return real(frame, *args, **kwargs)

    monkeypatch.setattr(connection_mod, "decode", counting)
    p.queue_binding_update(upd(3), T + 1)
    events = s.receive_data(p.data_to_send(), T + 1)
    assert len(events) == 1
    s.ack_binding_update(events[0].xid, now=T + 1)
    acked = p.receive_data(s.data_to_send(), T + 1)
    assert [type(e).__name__ for e in acked] == ["BindingAcked"]
    assert calls == []

"""Hostile input against the failover link (bounded fuzzing; the long run is ``make fuzz``):
random and mutated frames into PeerConnection (both dialects, with and without a shared
secret, before and after the handshake) and into a FailoverPeer with its engine never raise;
a breach closes the connection with a reject reason that a DISCONNECT (or a refusing
CONNECTACK) carries, and is never an internal error."""

from __future__ import annotations

import pytest
from _fuzz import FUZZ, failover_seeds, frame_stream, hostile, targets
from hypothesis import given
from hypothesis import strategies as st

from tandem.failover.events import ConnectionClosed
from tandem.wire.failover import MessageType, RejectReason

CUTS = st.lists(st.integers(0, 4000), max_size=6)
STREAM = st.one_of(frame_stream(failover_seeds()),
                   st.lists(hostile(failover_seeds()), min_size=1, max_size=5).map(b"".join))


@FUZZ
@given(STREAM, st.integers(0, 7), CUTS)
def test_peer_connection_only_disconnects_with_a_reason(data: bytes, bits: int,
                                                        cuts: list[int]) -> None:
    targets.check_connection(data, bits, cuts)


@FUZZ
@given(STREAM, st.booleans(), CUTS)
def test_failover_peer_survives_hostile_frames(data: bytes, secret: bool,
                                               cuts: list[int]) -> None:
    targets.PeerTarget(secret).check(data, cuts)


def test_garbage_after_the_handshake_disconnects_with_a_reason() -> None:
    conn = targets.check_connection(b"\x00\x05garbage", 4)
    closed = conn.close_reason
    assert isinstance(closed, ConnectionClosed)
    assert closed.reject_reason == RejectReason.UNKNOWN_REASON and not closed.by_peer


def test_the_breach_oracle_rejects_a_silent_close() -> None:
    with pytest.raises(AssertionError):
        targets._check_breach(ConnectionClosed("x", int(RejectReason.UNKNOWN_REASON), False),
                              b"", "isc")
    with pytest.raises(AssertionError):
        targets._check_breach(ConnectionClosed("internal error on a 12-byte message", 254,
                                               False), b"", "isc")
    assert MessageType.DISCONNECT  # the reason must come in one

"""FrameBuffer: whole messages out of arbitrary TCP chunks, hard size limit, bounded memory."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.errors import DecodeError
from tandem.wire.framing import HEADER_SIZE, MAX_MESSAGE_SIZE, FrameBuffer


def frame(mtype: int, xid: int, body: bytes = b"") -> bytes:
    return struct.pack("!HBBII", HEADER_SIZE + len(body), mtype, 12, 1_700_000_000, xid) + body


CONTACT = frame(11, 1)
STATE = frame(10, 2, bytes.fromhex("0018000102 0017000100 001900046553e2f0"))


def test_whole_messages_in_one_chunk() -> None:
    fb = FrameBuffer()
    assert fb.feed(CONTACT + STATE + CONTACT) == [CONTACT, STATE, CONTACT]
    assert fb.pending == 0


def test_byte_by_byte() -> None:
    fb = FrameBuffer()
    out: list[bytes] = []
    stream = STATE + CONTACT
    for i in range(len(stream)):
        got = fb.feed(stream[i : i + 1])
        out += got
        if i == len(STATE) - 1:
            assert got == [STATE]
        elif i < len(stream) - 1 and i != len(STATE) - 1:
            assert got == []
    assert out == [STATE, CONTACT]
    assert fb.pending == 0


def test_partial_message_is_held() -> None:
    fb = FrameBuffer()
    assert fb.feed(STATE[:20]) == []
    assert fb.pending == 20
    assert fb.feed(STATE[20:] + CONTACT[:1]) == [STATE]
    assert fb.pending == 1


def test_accepts_memoryview_and_bytearray() -> None:
    fb = FrameBuffer()
    assert fb.feed(memoryview(CONTACT)) == [CONTACT]
    assert fb.feed(bytearray(STATE)) == [STATE]


@pytest.mark.parametrize("length", [0, 1, 11, MAX_MESSAGE_SIZE + 1, 0xFFFF])
def test_bad_length_breaks_the_buffer(length: int) -> None:
    fb = FrameBuffer()
    with pytest.raises(DecodeError):
        fb.feed(CONTACT + struct.pack("!H", length) + bytes(10))
    assert fb.broken
    assert fb.pending == 0  # nothing retained after the breach
    with pytest.raises(DecodeError):
        fb.feed(CONTACT)


def test_bad_length_detected_from_two_bytes() -> None:
    fb = FrameBuffer()
    assert fb.feed(b"\x08") == []
    with pytest.raises(DecodeError):
        fb.feed(b"\x01")  # 0x0801 = 2049 > 2048, known before the body arrives


def test_limit_boundaries() -> None:
    biggest = struct.pack("!HBBII", MAX_MESSAGE_SIZE, 3, 12, 0, 0) + bytes(MAX_MESSAGE_SIZE - 12)
    smallest = struct.pack("!HBBII", HEADER_SIZE, 11, 12, 0, 0)
    assert FrameBuffer().feed(biggest + smallest) == [biggest, smallest]


def test_custom_limit() -> None:
    fb = FrameBuffer(max_size=100)
    assert fb.feed(frame(3, 1, bytes(88))) == [frame(3, 1, bytes(88))]
    with pytest.raises(DecodeError):
        fb.feed(frame(3, 1, bytes(89)))
    with pytest.raises(ValueError):
        FrameBuffer(max_size=11)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=200))
    return frame(draw(st.integers(0, 255)), draw(st.integers(0, 2**32 - 1)), body)


@settings(max_examples=200, deadline=None)
@given(msgs=st.lists(messages(), max_size=12), cuts=st.lists(st.integers(0, 3000), max_size=30))
def test_arbitrary_chunking_gives_same_messages(msgs: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(msgs)
    points = sorted({c for c in cuts if c <= len(stream)} | {0, len(stream)})
    fb = FrameBuffer()
    out: list[bytes] = []
    for a, b in itertools.pairwise(points):
        out += fb.feed(stream[a:b])
        assert fb.pending < fb.max_size  # never more than one partial message held
    assert out == msgs
    assert fb.pending == 0


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=5000), chunk=st.integers(1, 700))
def test_garbage_only_decode_error_and_bounded(data: bytes, chunk: int) -> None:
    fb = FrameBuffer()
    try:
        for i in range(0, len(data), chunk):
            fb.feed(data[i : i + chunk])
            assert fb.pending < fb.max_size
    except DecodeError:
        assert fb.broken

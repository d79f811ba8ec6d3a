"""Hostile input against the decoders (bounded fuzzing; the long runs are ``make fuzz``):
the DHCP decoder, the failover decoder and the failover frame buffer only ever raise
DecodeError, and what they accept encodes again."""

from __future__ import annotations

import pytest
from _fuzz import FUZZ, corpus, dhcp_seeds, failover_seeds, hostile, targets
from hypothesis import given
from hypothesis import strategies as st

from tandem.errors import DecodeError
from tandem.wire.dhcp import decode as dhcp_decode
from tandem.wire.failover import decode as fo_decode
from tandem.wire.framing import FrameBuffer


def test_the_capture_corpus_is_found_and_every_real_message_decodes() -> None:
    dhcp, frames = corpus.dhcp_messages(), corpus.failover_frames()
    if not dhcp or not frames:
        pytest.skip("captures not found (shared/captures beside the checkout)")
    assert all(targets.check_dhcp_decode(d) is not None for d in dhcp)
    for frame in frames:
        fo_decode(frame)  # real ISC traffic: never a DecodeError


@FUZZ
@given(hostile(dhcp_seeds(), 1500))
def test_dhcp_decoder_raises_only_decode_error(data: bytes) -> None:
    targets.check_dhcp_decode(data)


@FUZZ
@given(hostile(failover_seeds()))
def test_failover_decoder_raises_only_decode_error_and_round_trips(data: bytes) -> None:
    targets.check_failover_decode(data)


@FUZZ
@given(st.lists(hostile(failover_seeds()), min_size=1, max_size=4),
       st.lists(st.integers(0, 5000), max_size=8))
def test_frame_buffer_gives_the_same_frames_whatever_the_chunking(
    chunks: list[bytes], cuts: list[int]
) -> None:
    targets.check_framing(b"".join(chunks), cuts)


def test_the_oracles_can_fail() -> None:
    """The decoders do reject: a truncated message and a bad length are DecodeErrors."""
    frame = failover_seeds()[-1]
    with pytest.raises(DecodeError):
        fo_decode(frame[:-1])
    with pytest.raises(DecodeError):
        FrameBuffer().feed(b"\x00\x05" + bytes(10))
    with pytest.raises(DecodeError):
        dhcp_decode(b"\x01" * 100)

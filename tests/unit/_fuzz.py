"""Shared pieces of the bounded hypothesis fuzz tests (tests/unit/test_fuzz_*.py): the
oracles of fuzz/targets.py, seeds from the real captures (plus built-in ones, so the tests
run without them) and a mutation strategy."""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_DIR = Path(__file__).resolve().parents[2] / "fuzz"
if str(FUZZ_DIR) not in sys.path:
    sys.path.insert(0, str(FUZZ_DIR))

import corpus  # noqa: E402
import targets  # noqa: E402

#: A few seconds per test: bounded examples, no per-example deadline (shared CI machine).
FUZZ = settings(max_examples=600, deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@cache
def dhcp_seeds() -> tuple[bytes, ...]:
    from tandem.wire.dhcp import encode

    built = [encode(targets.probe_discover(7))]
    return tuple(corpus.dhcp_messages()[:200]) + tuple(built)


@cache
def failover_seeds() -> tuple[bytes, ...]:
    built = [
        targets.connect_frame("fuzz", 300, targets.T0, "isc", None),
        targets.state_frame(targets.T0, "isc", None),
    ]
    frames = corpus.failover_frames()
    return tuple(frames[:: max(1, len(frames) // 300)]) + tuple(built)


@st.composite
def mutated(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A seed with a few random edits: byte flips, overwrites, inserts, deletes, splices."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(data)))
        if kind == 0 and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1 and pos < len(data):
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, draw(st.integers(0, 255))]))
        elif kind == 2:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == 3:
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            data[pos:] = other[start:]
    return bytes(data)


def hostile(seeds: tuple[bytes, ...], max_size: int = 700) -> st.SearchStrategy[bytes]:
    """Random bytes or mutated real messages."""
    return st.one_of(st.binary(max_size=max_size), mutated(seeds))


@st.composite
def frame_stream(draw: st.DrawFn, seeds: tuple[bytes, ...]) -> bytes:
    """A partner's byte stream: mostly real frames (so the connection gets deep: bindings,
    acks, update requests), some mutated, now and then random bytes. (Hypothesis favours
    the first choice of a one_of/sampled_from, so "real" comes first.)"""
    out = bytearray()
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["real"] * 6 + ["mutated", "random"]))
        if kind == "real":
            out += draw(st.sampled_from(seeds))
        elif kind == "mutated":
            out += draw(mutated(seeds))
        else:
            out += draw(st.binary(max_size=64))
    return bytes(out)

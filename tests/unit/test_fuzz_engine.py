"""Hostile input against the DHCP engine (bounded fuzzing; the long run is ``make fuzz``):
random and mutated DHCP messages through Engine.handle with a real configuration never raise,
every reply is a well-formed BOOTREPLY to the request's xid, and the engine keeps answering a
valid DISCOVER (a reserved client's) with its OFFER after each of them."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from _fuzz import FUZZ, dhcp_seeds, hostile, targets
from hypothesis import given
from hypothesis import strategies as st

from tandem.config.schema import Config, ServerSection
from tandem.dhcp.engine import Engine
from tandem.dhcp.types import RxInfo
from tandem.wire.dhcp import encode

RXS = [
    targets.RX,
    RxInfo(src_ip=IPv4Address("203.0.113.1"), src_port=67, interface="eth1"),  # relayed
    RxInfo(src_ip=IPv4Address("192.0.2.33"), src_port=68, interface="eth0",
           local_ip=targets.SID, to_unicast=True),
    RxInfo(src_ip=IPv4Address("0.0.0.0"), src_port=68),  # unknown interface
]


@FUZZ
@given(st.lists(st.tuples(hostile(dhcp_seeds(), 1500), st.sampled_from(RXS),
                          st.floats(0, 400)), min_size=1, max_size=12))
def test_engine_survives_hostile_messages_and_keeps_answering(
    msgs: list[tuple[bytes, RxInfo, float]],
) -> None:
    target = targets.EngineTarget()
    for data, rx, step in msgs:
        target.check(data, step, rx)
    target.probe()


def test_the_probe_oracle_fails_when_the_engine_stops_answering() -> None:
    """An engine without the probe's reservation (and no pool) answers nothing: caught."""
    target = targets.EngineTarget()
    target.probe()
    target.engine = Engine(Config(server=ServerSection(server_id=targets.SID)))
    with pytest.raises(AssertionError, match="not answered"):
        target.probe()


def test_replies_to_real_captured_requests_encode() -> None:
    target = targets.EngineTarget()
    for data in dhcp_seeds():
        target.check(data)
    assert target.handled == len(dhcp_seeds())
    assert encode(targets.probe_discover(3))


def test_oversized_relay_agent_information_is_dropped_as_malformed() -> None:
    """Reproducer from `make fuzz` (engine target): a relayed DISCOVER whose option 82 is 495
    octets got an OFFER echoing it that no 576-byte datagram could carry (the service then
    failed to encode it). RFC 3046 caps option 82 at 255 octets: such a request is dropped."""
    target = targets.EngineTarget()
    bad = targets.probe_discover(5)
    bad.chaddr = bytes.fromhex("02ffcafe0001") + bytes(10)
    for code in (82, 61):
        bad.options = {53: b"\x01", code: b"\x01\x02" + bytes(493)}
        before = target.engine.stats["drop_bad_message"]
        assert target.engine.handle(bad, targets.RX, target.now).replies == []
        assert target.engine.stats["drop_bad_message"] == before + 1
    bad.options = {53: b"\x01", 82: b"\x01\x02" + bytes(253)}  # 255 octets: still served
    (offer,) = target.engine.handle(bad, targets.RX, target.now).replies
    assert len(encode(offer.msg, 576)) <= 576 - 28
    target.probe()

"""The per-message dataclasses have their ``__init__`` written out (so the compiled build
compiles it; docs/decisions.md): it must stay the one ``@dataclass`` would generate, field
for field, default for default, when someone adds or reorders a field."""

from __future__ import annotations

import dataclasses
import inspect
from ipaddress import IPv4Address

import pytest
from _build import EXPECT_COMPILED

from tandem.dhcp.types import Outcome, Reply
from tandem.leases.model import BindingState, Lease
from tandem.wire.dhcp import DhcpMessage

CLASSES = [DhcpMessage, Lease, Reply, Outcome]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_written_init_matches_the_fields(cls: type) -> None:
    if EXPECT_COMPILED:
        pytest.skip("the pure-Python run reads the signature (a compiled __init__ has none)")
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        if f.default is not dataclasses.MISSING:
            assert p.default == f.default, f.name
        elif f.default_factory is not dataclasses.MISSING:
            assert p.default is None, f.name  # None stands for a fresh default_factory()
        else:
            assert p.default is inspect.Parameter.empty, f.name


def example(cls: type) -> object:
    msg = DhcpMessage(op=2, xid=7, yiaddr=IPv4Address("192.0.2.9"), options={53: b"\x05"})
    lease = Lease(IPv4Address("192.0.2.9"), 3, BindingState.ACTIVE, b"\x02" * 6,
                  client_id=b"\x01id", hostname="h", start=1.0, end=2.0, cltt=1.5,
                  tstp=3.0, tsfp=2.5, relay_info=b"\x01\x01x")
    reply = Reply(msg, IPv4Address("192.0.2.1"), 67, "eth0", True, b"\x02" * 6)
    return {DhcpMessage: msg, Lease: lease, Reply: reply,
            Outcome: Outcome([reply], [lease], "EV")}[cls]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_a_keyword_and_is_kept(cls: type) -> None:
    obj = example(cls)
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}
    again = cls(**values)
    assert {n: getattr(again, n) for n in values} == values
    assert again == obj


@pytest.mark.parametrize("cls", [DhcpMessage, Outcome], ids=lambda c: c.__name__)
def test_default_containers_are_fresh(cls: type) -> None:
    a, b = cls(), cls()
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            assert getattr(a, f.name) == f.default_factory()
            assert getattr(a, f.name) is not getattr(b, f.name)

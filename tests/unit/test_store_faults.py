"""Store write failures at the service level, with an injected failing store (the real-disk
version is tests/e2e/test_disk_full.py): no ACK for an uncommitted lease, the alarm in the
log, in ``status`` and in the counters, retries without a tight loop, and recovery without a
restart when the store accepts writes again."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from pathlib import Path

import pytest
from test_service import Harness, client_msg, request_for, run_checked

from tandem import service
from tandem.api.control import ControlHandler
from tandem.clock import FakeClock
from tandem.leases.model import BindingState, Lease
from tandem.wire.dhcp import MessageType


def test_failing_store_raises_the_alarm_in_status_and_clears_it_on_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tandem")
    clock = FakeClock(1_800_000_000.0)

    async def body() -> None:
        async with Harness(tmp_path, clock=clock) as h:
            control = ControlHandler(h.server)
            assert control.status(clock.now())["store"] == {
                "ok": True, "alarm": None, "failing_since": None, "error": None,
                "uncommitted_leases": 0,
            }
            offers = []
            for i in (1, 2):
                h.relay.send(client_msg(i, MessageType.DISCOVER))
                offers.append(await h.relay.recv())
            h.store.fail = True
            for i in (1, 2):
                h.relay.send(request_for(i, offers[i - 1]))
            h.relay.send(client_msg(3, MessageType.DISCOVER))
            assert (await h.relay.recv()).xid == 0x1003  # the REQUESTs were handled before it
            await h.server.flush()  # and the failed commit dealt with
            st = control.status(clock.now())["store"]
            assert st["ok"] is False and st["alarm"] == "STORE_WRITE_FAILED"
            assert st["failing_since"] == clock.now() and "disk on fire" in st["error"]
            assert st["uncommitted_leases"] == 2  # kept for the retry, one per address
            assert h.server.stats["acks_sent"] == 0 and h.server.stats["acks_withheld"] == 2
            assert control.status(clock.now())["counters"]["store_write_failed"] >= 1
            # a later failure keeps the first failure time
            clock.advance(30)
            h.relay.send(request_for(1, offers[0]))
            h.relay.send(client_msg(4, MessageType.DISCOVER))
            assert (await h.relay.recv()).message_type is MessageType.OFFER  # OFFERs still go
            await h.server.flush()
            assert control.status(clock.now())["store"]["failing_since"] == clock.now() - 30
            assert h.server.stats["acks_sent"] == 0
            # the store works again: the retransmitted REQUESTs are ACKed, the alarm clears
            h.store.fail = False
            for i in (1, 2):
                h.relay.send(request_for(i, offers[i - 1]))
                ack = await h.relay.recv()
                assert (ack.message_type, ack.yiaddr) == (MessageType.ACK, offers[i - 1].yiaddr)
            st = control.status(clock.now())["store"]
            assert st["ok"] is True and st["alarm"] is None and st["uncommitted_leases"] == 0
            assert h.server.stats["store_recoveries"] == 1
            stored = h.stored()
            assert all(stored[o.yiaddr].state is BindingState.ACTIVE for o in offers)

    run_checked(body)
    recovered = [r.getMessage() for r in caplog.records
                 if r.getMessage().startswith("STORE_WRITE_RECOVERED")]
    assert len(recovered) == 1 and "failing_s=30" in recovered[0]


def test_acks_waiting_for_a_hanging_commit_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that hangs (not fails) must not let the ACKs waiting for it grow without
    bound: beyond MAX_WAITING_ACKS they are dropped and counted; the client retransmits."""
    monkeypatch.setattr(service, "MAX_WAITING_ACKS", 3)

    async def body() -> None:
        async with Harness(tmp_path) as h:
            loop = asyncio.get_running_loop()
            entered, release = threading.Event(), threading.Event()
            inner_commit = h.store.commit

            def slow_commit(leases: Iterable[Lease]) -> None:
                entered.set()
                release.wait(10)
                inner_commit(leases)

            h.store.commit = slow_commit  # type: ignore[method-assign]
            offers = {}
            for i in range(1, 7):
                h.relay.send(client_msg(i, MessageType.DISCOVER))
                offers[i] = await h.relay.recv()
            h.relay.send(request_for(1, offers[1]))
            assert await loop.run_in_executor(None, entered.wait, 5)  # commit 1 hangs
            for i in range(2, 7):
                h.relay.send(request_for(i, offers[i]))
            h.relay.send(client_msg(7, MessageType.DISCOVER))
            assert (await h.relay.recv()).xid == 0x1007  # the REQUESTs were handled
            assert h.server.stats["acks_dropped_backlog"] == 2  # 5 waited; 3 may
            release.set()
            got = set()
            for _ in range(4):
                ack = await h.relay.recv()
                assert ack.message_type is MessageType.ACK
                got.add(ack.xid - 0x1000)
            assert got == {1, 2, 3, 4}
            await h.server.flush()
            assert h.server.stats["acks_sent"] == 4

    run_checked(body)


def test_status_text_shows_the_store_alarm_and_the_clock_skew() -> None:
    from tandem.cli import _status_text

    now = 1_800_000_000.0
    fo = {"name": "pair", "role": "secondary", "mode": "hot-standby", "mclt_s": 300,
          "state": "NORMAL", "since": now - 60, "partner_state": "NORMAL", "connected": True,
          "service": "standby", "reserve": {"free": 80, "backup": 20},
          "all_free_usable_at": None, "clock_skew_s": -40.25, "max_clock_skew_s": 60}
    store = {"ok": False, "alarm": "STORE_WRITE_FAILED", "failing_since": now - 30,
             "error": "database or disk is full", "uncommitted_leases": 3}
    text = "\n".join(_status_text({"now": now, "leases": {}, "failover": fo,
                                   "relationships": [fo], "store": store, "counters": {}}))
    assert "clock:    partner -40.2 s (limit 60 s)" in text
    assert "store:    ALARM STORE_WRITE_FAILED since" in text
    assert "database or disk is full (3 leases uncommitted, ACKs withheld)" in text
    healthy = dict(store, ok=True)
    text = "\n".join(_status_text({"now": now, "leases": {}, "failover": None,
                                   "store": healthy, "counters": {}}))
    assert "ALARM" not in text

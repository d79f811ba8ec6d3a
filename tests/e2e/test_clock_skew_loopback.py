"""Clock skew through the real service shell: a hot-standby pair on loopback (no root), the
standby's clock set ahead of the primary's.

120 s (beyond max_clock_skew_s = 60): every CONNECT is refused with reject reason 4, both
log FAILOVER_CLOCK_SKEW_REFUSED, nobody reaches NORMAL. Then the standby's clock is set to
40 s ahead (within the tolerance, beyond the warning threshold of 30 s): the link, which
keeps retrying, connects by itself -- no restart -- both reach NORMAL, both log
FAILOVER_CLOCK_SKEW once, and ``status`` shows the measured skew on each side.

Waits are for real events on real sockets, each bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tandem.api.control import ControlHandler
from tandem.config import load_text
from tandem.service import Server
from tandem.wire.failover import ServerState

from .test_failover_pair_loopback import PRIMARY, STANDBY, free_port, pair_config, until


class SkewedClock:
    """The system clock plus an offset the test changes while the server runs."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset


def test_pair_refuses_a_skewed_partner_with_reason_4_and_recovers_when_clocks_agree(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tandem")
    errors: list[dict[str, Any]] = []
    dhcp_port = free_port("127.0.0.2")
    fo_ports = {PRIMARY: free_port(PRIMARY, socket.SOCK_STREAM),
                STANDBY: free_port(STANDBY, socket.SOCK_STREAM)}
    cfg_p = load_text(pair_config("primary", PRIMARY, STANDBY, dhcp_port, fo_ports, tmp_path))
    cfg_s = load_text(pair_config("secondary", STANDBY, PRIMARY, dhcp_port, fo_ports, tmp_path))
    skewed = SkewedClock(120.0)

    def names() -> list[str]:
        return [r.getMessage().split()[0] for r in caplog.records]

    async def body() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        primary, standby = Server(cfg_p), Server(cfg_s, clock=skewed)
        await primary.start()
        await standby.start()
        try:
            p_peer, s_peer = primary.failover_peer, standby.failover_peer
            assert p_peer is not None and s_peer is not None
            # The link retries every second: by the time both logged, the standby may hold
            # a new connection that is not refused yet, so wait for a closed one as well.
            await until(lambda: names().count("FAILOVER_CLOCK_SKEW_REFUSED") >= 2
                        and s_peer.conn is not None and s_peer.conn.close_reason is not None,
                        "the refusal logged on both sides", timeout=15)
            s_conn = s_peer.conn
            assert s_conn is not None and s_conn.close_reason is not None
            assert s_conn.close_reason.reject_reason == 4
            assert "clock skew" in s_conn.close_reason.reason
            assert p_peer.state is not ServerState.NORMAL
            assert s_peer.state is not ServerState.NORMAL
            assert standby.stats["failover_skew_refusals"] >= 1
            assert primary.stats["failover_skew_refusals"] >= 1
            # the clocks agree (within the tolerance) again: the pair heals itself
            skewed.offset = 40.0
            await until(lambda: p_peer.state is ServerState.NORMAL
                        and s_peer.state is ServerState.NORMAL, "both in NORMAL", timeout=20)
            await until(lambda: names().count("FAILOVER_CLOCK_SKEW") >= 2,
                        "the skew warning on both sides", timeout=5)
            now = time.time()
            s_status = ControlHandler(standby).status(now)["failover"]
            p_status = ControlHandler(primary).status(now)["failover"]
            assert abs(s_status["clock_skew_s"] + 40.0) < 2.0  # the primary is 40 s behind
            assert abs(p_status["clock_skew_s"] - 40.0) < 2.0
            assert s_status["max_clock_skew_s"] == 60
            assert s_status["connected"] is True
        finally:
            await standby.stop()
            await primary.stop()

    asyncio.run(asyncio.wait_for(body(), 60))
    assert errors == [], errors
    assert names().count("FAILOVER_CLOCK_SKEW") == 2  # once per side, not per message

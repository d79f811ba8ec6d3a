"""``make demo`` (tandem.demo): the hot-standby pair story, run once with a few clients.

The demo is two real in-process servers on loopback (unprivileged ports, temporary stores);
one run (about two seconds, no sleeps of our own: the demo waits for real socket events,
each bounded) is shared by the tests below, which check what a person watching it is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tandem.demo import (
    LEASE_S,
    MCLT_S,
    PAIR_RELAY,
    PRIMARY,
    RESERVE,
    STANDBY,
    PairDemo,
    main,
    verdict,
)
from tandem.wire.failover import ServerState


def free_port(host: str, kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Run:
    def __init__(self, demo: PairDemo, ok: bool, code: int, out: str) -> None:
        self.demo, self.ok, self.code, self.out = demo, ok, code, out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp: Path = tmp_path_factory.mktemp("demo")
    fo_ports = {PRIMARY: free_port(PRIMARY, socket.SOCK_STREAM),
                STANDBY: free_port(STANDBY, socket.SOCK_STREAM)}
    demo = PairDemo(free_port(PAIR_RELAY), fo_ports, 8, str(tmp), pace=0.0,
                    client_timeout_s=0.25)
    demo.relay.tries = 2  # a failing exchange costs 0.5 s, not 1 s
    ok = asyncio.run(asyncio.wait_for(demo.run(), 60))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        demo.summary()
        code = verdict(demo, ok)
    return Run(demo, ok, code, buf.getvalue())


def answers(run: Run, phase: str, verb: str) -> list[tuple[str, IPv4Address | None, int | None]]:
    return [(a.server, a.address, a.lease_s) for a in run.demo.answers
            if a.phase == phase and a.verb == verb]


def test_the_pair_comes_up_and_hands_the_standby_its_reserve(run: Run) -> None:
    firsts = {role: [to for r, _, to in run.demo.transitions if r == role]
              for role in ("primary", "standby")}
    assert ServerState.NORMAL in firsts["primary"] and ServerState.NORMAL in firsts["standby"]
    assert len(run.demo.reserve_at_start) == RESERVE == 20


def test_in_normal_only_the_primary_answers_with_mclt_leases(run: Run) -> None:
    got = answers(run, "normal", "DORA")
    assert len(got) == 4
    assert all(server == "primary" and lease == MCLT_S for server, _, lease in got)
    assert len({addr for _, addr, _ in got}) == 4  # four different addresses
    renewals = answers(run, "normal", "RENEW")
    assert [server for server, _, _ in renewals] == ["primary", "primary"]
    assert all(lease in (MCLT_S, LEASE_S) for _, _, lease in renewals)


def test_during_the_outage_the_standby_serves_new_clients_from_its_reserve(run: Run) -> None:
    got = answers(run, "outage", "DORA")
    assert len(got) == 2
    for server, addr, lease in got:
        assert server == "standby" and lease == MCLT_S
        assert addr in run.demo.reserve_at_start
    standby_states = [(frm, to) for r, frm, to in run.demo.transitions if r == "standby"]
    assert (ServerState.NORMAL, ServerState.COMMUNICATIONS_INTERRUPTED) in standby_states


def test_after_the_restart_the_pair_is_normal_and_the_primary_answers(run: Run) -> None:
    assert run.demo.final_states == {"primary": ServerState.NORMAL,
                                     "standby": ServerState.NORMAL}
    after = answers(run, "after", "DORA") + answers(run, "after", "REBIND")
    assert len(after) == 2 + 2 + 1
    assert all(server == "primary" for server, _, _ in after)
    assert run.demo.relay.both_answered == 0
    # every client got at least one ACK, and the clients served by the standby kept theirs
    assert all(c.acks >= 1 for c in run.demo.clients)


def test_the_summary_shows_both_servers(run: Run) -> None:
    lines = run.out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines
            if line.startswith(("primary ", "standby "))}
    assert rows["primary"][1:3] == [PRIMARY, "NORMAL"]
    assert rows["standby"][1:3] == [STANDBY, "NORMAL"]
    # the standby ACKed exactly the outage exchanges (new clients and rebinds), nothing else
    outage = answers(run, "outage", "DORA") + answers(run, "outage", "REBIND")
    assert int(rows["standby"][7]) == len(outage) > 0


def test_during_the_outage_rebinding_clients_are_answered_by_the_standby(run: Run) -> None:
    got = answers(run, "outage", "REBIND")
    assert got and all(server == "standby" and lease == MCLT_S for server, _, lease in got)
    assert run.ok and run.code == 0


def test_the_single_server_demo_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--single", "--port", str(free_port("127.0.0.2")), "--clients", "6"]) == 0
    assert "6/6 clients got an ACK" in capsys.readouterr().out

"""Optional mutual TLS on the failover link (PeerLink(tls=TlsFiles(...))) on loopback, with
self-signed certificates made by the ``openssl`` CLI in the test: each server trusts exactly
its partner's certificate. Bytes flow when both certificates are right; a partner with any
other certificate (or none) never reaches the peer, in either direction, and the accepting
side counts (``tls_handshake_failed``) and logs (``FAILOVER_TLS_HANDSHAKE_FAILED``) every
handshake it refuses, with the source address and the reason."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tandem.net.peer_tcp import PeerLink, TlsFiles

PRIMARY = "127.0.0.1"
SECONDARY = "127.0.0.2"
WAIT_S = 5.0
FAST = (0.02, 0.1)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
         "-addext", "subjectAltName=IP:127.0.0.1,IP:127.0.0.2"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("tls")
    return {n: make_cert(d, n) for n in ("primary", "secondary", "intruder")}


def files(certs: dict[str, tuple[Path, Path]], me: str, trust: str) -> TlsFiles:
    cert, key = certs[me]
    return TlsFiles(str(cert), str(key), str(certs[trust][0]))


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EchoPeer:
    """Toy sans-I/O peer: records what arrives; the secondary answers every chunk."""

    def __init__(self, answer: bool, changed: asyncio.Event) -> None:
        self.answer = answer
        self.changed = changed
        self.received = bytearray()
        self.out = bytearray()
        self.made = 0

    def connection_made(self, now: float) -> None:
        self.made += 1
        self.changed.set()

    def receive_data(self, data: bytes, now: float) -> None:
        self.received += data
        if self.answer:
            self.out += b"echo:" + data
        self.changed.set()

    def data_to_send(self) -> bytes:
        out, self.out = bytes(self.out), bytearray()
        return out

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        return None


async def until(changed: asyncio.Event, cond: Callable[[], bool], what: str) -> None:
    async def loop() -> None:
        while not cond():
            changed.clear()
            await changed.wait()

    try:
        await asyncio.wait_for(loop(), WAIT_S)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def run_checked(body: Callable[[], Awaitable[None]]) -> None:
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        await asyncio.wait_for(body(), timeout=20)

    asyncio.run(main())
    assert errors == [], errors


def links(p_tls: TlsFiles | None, s_tls: TlsFiles | None,
          changed: asyncio.Event) -> tuple[PeerLink, EchoPeer, PeerLink, EchoPeer]:
    p_port, s_port = free_port(PRIMARY), free_port(SECONDARY)
    pp, sp = EchoPeer(False, changed), EchoPeer(True, changed)
    primary = PeerLink(pp, role="primary", listen=(PRIMARY, p_port),
                       connect_to=(SECONDARY, s_port), allowed_peer=SECONDARY,
                       reconnect_s=FAST, connect_timeout_s=2.0, tls=p_tls)
    secondary = PeerLink(sp, role="secondary", listen=(SECONDARY, s_port),
                         connect_to=(PRIMARY, p_port), allowed_peer=PRIMARY,
                         reconnect_s=FAST, connect_timeout_s=2.0, tls=s_tls)
    return primary, pp, secondary, sp


def test_mutual_tls_link_carries_bytes_both_ways(certs: Any) -> None:
    async def body() -> None:
        changed = asyncio.Event()
        primary, pp, secondary, sp = links(files(certs, "primary", "secondary"),
                                           files(certs, "secondary", "primary"), changed)
        await secondary.start()
        await primary.start()
        try:
            await until(changed, lambda: pp.made == 1 and sp.made == 1, "TLS link up")
            conn = primary._live
            assert conn is not None and conn.transport is not None
            tls_obj = conn.transport.get_extra_info("ssl_object")
            assert isinstance(tls_obj, ssl.SSLObject)
            assert tls_obj.version() in ("TLSv1.2", "TLSv1.3")
            peer_cert = tls_obj.getpeercert()
            assert peer_cert and ("commonName", "secondary") in peer_cert["subject"][0]
            pp.out += b"hello over tls"
            primary.flush()
            await until(changed, lambda: bytes(pp.received) == b"echo:hello over tls", "echo")
            assert bytes(sp.received) == b"hello over tls"
        finally:
            await primary.close()
            await secondary.close()

    run_checked(body)


@pytest.mark.parametrize(
    "case", ["intruder-dials-secondary", "primary-dials-intruder", "plain-tcp-dials-tls"]
)
def test_a_partner_without_the_expected_certificate_is_refused(
    certs: Any, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tandem.net.peer")

    async def body() -> None:
        changed = asyncio.Event()
        if case == "intruder-dials-secondary":
            # the primary's address, but the intruder's certificate
            p_tls = files(certs, "intruder", "secondary")
            s_tls = files(certs, "secondary", "primary")
        elif case == "primary-dials-intruder":
            p_tls = files(certs, "primary", "secondary")
            s_tls = files(certs, "intruder", "primary")
        else:
            p_tls, s_tls = None, files(certs, "secondary", "primary")
        primary, pp, secondary, sp = links(p_tls, s_tls, changed)
        await secondary.start()
        await primary.start()
        try:
            # the primary keeps dialling and failing; wait for several attempts
            await until_stat(primary, "connect_attempts", 3)
            # The side that checks the wrong certificate never lets the connection reach its
            # peer and nothing arrives there. (With TLS 1.3 the client's handshake ends
            # before the server has checked the client's certificate: a refused client may
            # see its connection come up and drop at once; the plain-TCP client may even
            # read the TLS alert. Neither is the refusing side.)
            refusing, other = (pp, sp) if case == "primary-dials-intruder" else (sp, pp)
            assert refusing.made == 0 and refusing.received == b""
            assert not (primary.connected and secondary.connected)
            if case != "plain-tcp-dials-tls":
                assert other.received == b""
            if case == "primary-dials-intruder":
                assert primary.stats["connect_failures"] >= 2
            else:
                # the accepting side counted and logged the refused handshakes
                await until_stat(secondary, "tls_handshake_failed", 1)
                assert secondary.stats["connections"] == 0
                lines = [r.getMessage() for r in caplog.records
                         if r.getMessage().startswith("FAILOVER_TLS_HANDSHAKE_FAILED ")]
                assert len(lines) == 1  # at most once a minute; the rest in a summary
                assert f"source={PRIMARY} " in lines[0] and "reason=" in lines[0]
                reason = lines[0].split("reason=", 1)[1]
                if case == "intruder-dials-secondary":  # the client's certificate is wrong
                    assert "CERTIFICATE" in reason.upper()
                else:  # plain TCP that says nothing: the handshake timed out
                    assert "handshake" in reason.lower()
        finally:
            await primary.close()
            await secondary.close()

    run_checked(body)


def test_plain_bytes_to_a_tls_listener_are_counted_and_logged(
    certs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Plain TCP that speaks failover (not a TLS hello) from the partner's address fails the
    handshake at once; a stranger is refused before any handshake (not counted as one)."""
    caplog.set_level(logging.WARNING, logger="tandem.net.peer")

    async def body() -> None:
        changed = asyncio.Event()
        s_port = free_port(SECONDARY)
        sp = EchoPeer(True, changed)
        secondary = PeerLink(sp, role="secondary", listen=(SECONDARY, s_port),
                             connect_to=None, allowed_peer=PRIMARY, reconnect_s=FAST,
                             connect_timeout_s=2.0, tls=files(certs, "secondary", "primary"))
        await secondary.start()
        try:
            for source in (PRIMARY, PRIMARY, "127.0.0.3"):
                reader, writer = await asyncio.open_connection(SECONDARY, s_port,
                                                               local_addr=(source, 0))
                writer.write(b"\x00\x0c" + bytes(10))  # a failover frame, not a TLS hello
                try:  # closed by the listener (EOF or reset) without a byte of failover
                    got = await asyncio.wait_for(reader.read(100), WAIT_S)
                except ConnectionResetError:
                    got = b""
                assert b"\x00\x0c" not in got
                writer.close()
            await until_stat(secondary, "tls_handshake_failed", 2)
            await until_stat(secondary, "refused_not_partner", 1)
            assert secondary.stats["tls_handshake_failed"] == 2  # not the stranger
            assert sp.made == 0 and sp.received == b""
            lines = [r.getMessage() for r in caplog.records
                     if r.getMessage().startswith("FAILOVER_TLS_HANDSHAKE_FAILED ")]
            assert len(lines) == 1  # the second within the minute: counted, not logged
            assert f"source={PRIMARY} " in lines[0]
            assert "WRONG_VERSION_NUMBER" in lines[0] or "record layer" in lines[0].lower()
        finally:
            await secondary.close()

    run_checked(body)


async def until_stat(link: PeerLink, key: str, n: int) -> None:
    async def loop() -> None:
        while link.stats[key] < n:
            await asyncio.sleep(0.02)  # polling a counter the link has no event for

    await asyncio.wait_for(loop(), WAIT_S)


def test_unreadable_tls_files_fail_at_construction(tmp_path: Path, certs: Any) -> None:
    cert, key = certs["primary"]
    with pytest.raises((OSError, ssl.SSLError)):
        TlsFiles(str(cert), str(key), str(tmp_path / "missing.pem")).server_context()
    with pytest.raises((OSError, ssl.SSLError)):
        TlsFiles(str(cert), str(certs["secondary"][1]), str(cert)).client_context()  # wrong key


def test_a_shared_listener_speaks_tls_too(certs: Any) -> None:
    """Relationships on one listen address share a socket (net/peer_mux.py): it uses their
    TLS files, so a partner with the right certificate gets through and plain TCP does not."""
    from tandem.net.peer_mux import MuxedPeerLink, SharedListener

    async def body() -> None:
        changed = asyncio.Event()
        s_port = free_port(SECONDARY)
        sp = EchoPeer(True, changed)
        muxed = MuxedPeerLink(sp, role="secondary", listen=(SECONDARY, s_port),
                              connect_to=(PRIMARY, 1), allowed_peer=PRIMARY,
                              reconnect_s=FAST, connect_timeout_s=2.0,
                              tls=files(certs, "secondary", "primary"))
        listener = SharedListener((SECONDARY, s_port), [muxed])
        pp = EchoPeer(False, changed)
        primary = PeerLink(pp, role="primary", listen=(PRIMARY, free_port(PRIMARY)),
                           connect_to=(SECONDARY, s_port), allowed_peer=SECONDARY,
                           reconnect_s=FAST, connect_timeout_s=2.0,
                           tls=files(certs, "primary", "secondary"))
        await listener.start()
        await muxed.start()
        try:
            # plain TCP from the partner's address first: the TLS layer drops it
            reader, writer = await asyncio.open_connection(SECONDARY, s_port,
                                                           local_addr=(PRIMARY, 0))
            writer.write(b"\x00\x0c" + bytes(10))  # a failover frame, not a TLS hello
            try:  # the TLS layer closes it (EOF or reset) without a byte of failover
                got = await asyncio.wait_for(reader.read(100), WAIT_S)
            except ConnectionResetError:
                got = b""
            assert b"\x00\x0c" not in got
            writer.close()
            assert sp.made == 0 and sp.received == b""
            await until_stat(muxed, "tls_handshake_failed", 1)  # counted by the partner's link
            await primary.start()
            await until(changed, lambda: sp.made == 1, "TLS link via the shared listener")
            pp.out += b"via mux"
            primary.flush()
            await until(changed, lambda: bytes(pp.received) == b"echo:via mux", "echo")
        finally:
            await primary.close()
            await muxed.close()
            await listener.close()

    run_checked(body)


def test_links_sharing_a_listener_must_agree_on_tls(certs: Any) -> None:
    from tandem.net.peer_mux import MuxedPeerLink, SharedListener

    changed = asyncio.Event()
    links = [
        MuxedPeerLink(EchoPeer(True, changed), role="secondary", listen=(SECONDARY, 6470),
                      connect_to=(partner, 647), allowed_peer=partner, tls=tls)
        for partner, tls in (("127.0.0.1", files(certs, "secondary", "primary")),
                             ("127.0.0.3", None))
    ]
    with pytest.raises(ValueError, match="same TLS files"):
        SharedListener((SECONDARY, 6470), links)


def test_refused_handshakes_reach_the_servers_counters_and_status() -> None:
    """``tandem status`` reports the links' refusals (summed over relationships)."""
    from collections import Counter
    from types import SimpleNamespace

    from tandem.api.control import COUNTERS
    from tandem.config.schema import Config
    from tandem.service import Server

    server = Server(Config())
    links: Any = {  # stand-ins: only their counters are read
        "a": SimpleNamespace(stats=Counter(tls_handshake_failed=3, refused_not_partner=1)),
        "b": SimpleNamespace(stats=Counter(tls_handshake_failed=2)),
    }
    server._links = links
    stats = server.stats
    assert stats["failover_tls_handshake_failed"] == 5
    assert stats["failover_refused_not_partner"] == 1
    assert "failover_tls_handshake_failed" in COUNTERS
    assert "failover_refused_not_partner" in COUNTERS

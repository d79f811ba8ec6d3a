"""One failover listening socket shared by several relationships (hub and spoke).

A hub in several failover relationships usually listens on one address and port (TCP 647)
for all its partners. :class:`SharedListener` owns that socket and hands every incoming
connection to the :class:`~tandem.net.peer_tcp.PeerLink` of the relationship whose partner
address it comes from; a source that is no relationship's partner is refused by the first
link's own check (reset, counted ``refused_not_partner``, ``FAILOVER_CONNECTION_REFUSED``).
With mutual TLS (every link sharing the socket has the same files) the partner's link runs
the handshake and counts its failures (``tls_handshake_failed``).

The links sharing the socket are :class:`MuxedPeerLink`: a :class:`PeerLink` that does not
open a listening socket of its own; dialling (the primary's side), timers, commit-before-
acknowledge and everything else are :class:`PeerLink`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence
from ipaddress import IPv4Address

from tandem.log import event, get_logger
from tandem.net.peer_tcp import PeerLink, TlsListener, _Conn, _Listening

__all__ = ["MuxedPeerLink", "SharedListener"]

log = get_logger("net.peer")


class MuxedPeerLink(PeerLink):
    """A :class:`PeerLink` whose inbound connections come from a :class:`SharedListener`."""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._closed = False
        self._idle.set()
        if self.role == "primary" and self.connect_to is not None:
            self._dialer = loop.create_task(self._dial_loop())
        self._rearm()


class _RoutedConn(_Conn):
    """An accepted connection: it belongs to the link of the partner it comes from."""

    def __init__(self, listener: SharedListener) -> None:
        super().__init__(listener.links[0], "inbound")
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peername = transport.get_extra_info("peername")
        remote = str(peername[0]) if peername else ""
        # Unknown sources go to the first link, which refuses and logs them.
        self.link = self.listener.by_partner.get(remote, self.listener.links[0])
        super().connection_made(transport)


class SharedListener:
    """Listens on ``listen`` for every link in ``links`` (their partner addresses must
    differ: the config check says so)."""

    def __init__(self, listen: tuple[IPv4Address | str, int], links: Sequence[PeerLink]) -> None:
        if not links:
            raise ValueError("a shared listener needs at least one link")
        self.listen = (str(listen[0]), int(listen[1]))
        self.links = list(links)
        self.by_partner: dict[str, PeerLink] = {}
        for link in self.links:
            if link.allowed_peer in self.by_partner:
                raise ValueError(f"two links with partner {link.allowed_peer}")
            self.by_partner[link.allowed_peer] = link
        if len({link.tls for link in self.links}) > 1:
            raise ValueError("links sharing a listen address must use the same TLS files")
        self._tls = self.links[0].tls is not None
        self._server: _Listening | None = None

    @property
    def listen_port(self) -> int:
        if self._server is not None and self._server.sockets:
            port: int = self._server.sockets[0].getsockname()[1]
            return port
        return self.listen[1]

    async def start(self) -> None:
        """Open the socket (raises OSError); the links are started by their owner."""
        loop = asyncio.get_running_loop()
        if self._tls:  # each link starts TLS for its own partner (PeerLink._accept_socket)
            listener = TlsListener(self.listen, self._route)
            await listener.start()
            self._server = listener
        else:
            self._server = await loop.create_server(
                lambda: _RoutedConn(self),
                self.listen[0],
                self.listen[1],
                reuse_address=True,
                family=socket.AF_INET,
            )
        event(log, logging.INFO, "FAILOVER_LISTENING",
              address=f"{self.listen[0]}:{self.listen_port}",
              partner=",".join(self.by_partner), role="shared")

    def _route(self, source: str) -> PeerLink:
        """Unknown sources go to the first link, which refuses and logs them."""
        return self.by_partner.get(source, self.links[0])

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        with contextlib.suppress(Exception):  # closing must not fail the stop
            await asyncio.wait_for(server.wait_closed(), timeout=1.0)

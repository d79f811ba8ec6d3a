"""asyncio adapters: DHCP sockets (:mod:`tandem.net.udp`) and link-layer replies
(:mod:`tandem.net.rawsock`)."""

"""Disk-full driver for tests/e2e/test_disk_full.py; run as root inside a private mount
namespace (``unshare --mount --propagation private``).

``python _disk_full_driver.py WORKDIR`` mounts a 2 MiB tmpfs on WORKDIR/fs (visible only in
this namespace; gone with it), puts the lease store there, starts the server in this process
on loopback (a UDP socket on 127.0.0.2 plays the relay), fills the file system until a few
KiB are left, then runs DORAs with new clients until the store can no longer commit. Then
it checks that the client whose REQUEST hit the full disk gets no ACK, that ``status``
reports the alarm, frees the space, and checks that the same client's retransmitted REQUEST
is ACKed -- same server, no restart. Prints one JSON object with what it saw.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from tandem.api.control import ControlHandler
from tandem.config import Config, Pool, ServerSection, StoreSection, Subnet
from tandem.service import Server
from tandem.wire.dhcp import (
    OPT_CLIENT_ID,
    OPT_MESSAGE_TYPE,
    OPT_REQUESTED_IP,
    OPT_SERVER_ID,
    DhcpMessage,
    MessageType,
    decode,
    encode,
)

SERVER = "127.0.0.1"
RELAY = "127.0.0.2"
FS_SIZE = "2m"
LEAVE_FREE = 48 * 1024  # what the filler leaves for the store to fill
MAX_CLIENTS = 400


class Events(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.names.append(record.getMessage().split()[0])


def client_msg(i: int, mtype: MessageType, extra: dict[int, bytes] | None = None) -> DhcpMessage:
    hw = bytes([0x02, 0, 0, 0, i >> 8, i & 0xFF])
    options = {OPT_MESSAGE_TYPE: bytes([mtype]), OPT_CLIENT_ID: b"\x01" + hw}
    options.update(extra or {})
    return DhcpMessage(xid=0x1000 + i, chaddr=hw + bytes(10), giaddr=IPv4Address(RELAY),
                       hops=1, options=options)


def request_for(i: int, offer: DhcpMessage) -> DhcpMessage:
    return client_msg(i, MessageType.REQUEST, {
        OPT_REQUESTED_IP: offer.yiaddr.packed, OPT_SERVER_ID: offer.options[OPT_SERVER_ID]})


def fill(path: Path, leave_free: int = LEAVE_FREE) -> int:
    """Write ``path`` until the file system is full, then give back ``leave_free`` bytes."""
    chunk = b"\xa5" * 65536
    size = 0
    with open(path, "wb") as f:
        try:
            while True:
                size += f.write(chunk)
                f.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    if leave_free:
        os.truncate(path, max(0, size - leave_free))
    return size


async def main(workdir: Path) -> dict[str, Any]:
    fs = workdir / "fs"
    fs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755", "tandem-test",
                    str(fs)], check=True)
    relay = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    relay.bind((RELAY, 0))
    relay.setblocking(False)
    port = relay.getsockname()[1]
    cfg = Config(
        server=ServerSection(listen_address=IPv4Address(SERVER), port=port,
                             client_port=port + 1, raw_replies=False, control_socket=""),
        store=StoreSection(path=str(fs / "leases.db")),
        subnets=[Subnet(id=1, prefix=IPv4Network("192.0.2.0/24"),
                        pools=[Pool(start=IPv4Address("192.0.2.10"),
                                    end=IPv4Address("192.0.2.250"))],
                        relay_addresses=[IPv4Address(RELAY)], lease_time_s=600)],
    )
    handler = Events()
    logging.getLogger("tandem").addHandler(handler)
    logging.getLogger("tandem").setLevel(logging.INFO)
    loop = asyncio.get_running_loop()
    server = Server(cfg)
    await server.start()
    control = ControlHandler(server)
    out: dict[str, Any] = {}

    async def exchange(msg: DhcpMessage, timeout: float) -> DhcpMessage | None:
        relay.sendto(encode(msg), (SERVER, port))
        try:
            while True:
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(relay, 4096), timeout)
                reply = decode(data)
                if reply.xid == msg.xid:
                    return reply
        except TimeoutError:
            return None

    try:
        out["filler_bytes"] = fill(fs / "filler")
        acked = 0
        stuck: tuple[int, DhcpMessage] | None = None
        for i in range(1, MAX_CLIENTS):
            offer = await exchange(client_msg(i, MessageType.DISCOVER), 2.0)
            if offer is None or offer.message_type is not MessageType.OFFER:
                out["error"] = f"no OFFER for client {i}"
                return out
            ack = await exchange(request_for(i, offer), 1.0)
            if ack is not None and ack.message_type is MessageType.ACK:
                acked += 1
                continue
            stuck = (i, offer)
            break
        out["acked_before_full"] = acked
        if stuck is None:
            out["error"] = f"the disk never filled in {MAX_CLIENTS} clients"
            return out
        i, offer = stuck
        stats = server.stats
        out["store_write_failed"] = stats["store_write_failed"]
        out["acks_withheld"] = stats["acks_withheld"]
        # retransmissions while the disk is still full: still no ACK
        again = await exchange(request_for(i, offer), 2.5)
        out["ack_while_full"] = again is not None and again.message_type is MessageType.ACK
        out["status_while_full"] = control.status(loop.time())["store"]
        df = os.statvfs(fs)
        out["free_bytes_while_full"] = df.f_bavail * df.f_frsize
        # space returns
        os.unlink(fs / "filler")
        ack = None
        for _ in range(5):  # the client retransmits until answered
            ack = await exchange(request_for(i, offer), 2.0)
            if ack is not None:
                break
        out["ack_after_space"] = ack is not None and ack.message_type is MessageType.ACK
        out["ack_address_matches"] = ack is not None and ack.yiaddr == offer.yiaddr
        out["status_after"] = control.status(loop.time())["store"]
        out["store_recoveries"] = server.stats["store_recoveries"]
        # and new clients get served again
        nxt = await exchange(client_msg(MAX_CLIENTS + 1, MessageType.DISCOVER), 2.0)
        ok = False
        if nxt is not None:
            ack2 = await exchange(request_for(MAX_CLIENTS + 1, nxt), 2.0)
            ok = ack2 is not None and ack2.message_type is MessageType.ACK
        out["new_client_acked_after"] = ok
    finally:
        await server.stop()
        relay.close()
        out["events"] = sorted(set(handler.names) & {
            "STORE_WRITE_FAILED", "STORE_WRITE_RECOVERED"})
        # committed leases as a fresh reader sees them
        from tandem.store import open_store

        st = open_store(cfg.store)
        try:
            out["stored_active"] = sum(1 for le in st.load() if le.state.name == "ACTIVE")
        finally:
            st.close()
        subprocess.run(["umount", str(fs)], check=False)
    return out


if __name__ == "__main__":
    result = asyncio.run(main(Path(sys.argv[1])))
    print(json.dumps(result, default=str))

"""Sans-I/O frame buffer for the failover TCP stream (draft-12 §6.1, ISC limits).

Every failover message starts with a 2-byte big-endian length that counts the whole message,
header included. :class:`FrameBuffer` turns arbitrary TCP chunks into complete message byte
strings. A length below the 12-byte header or above the hard limit is a protocol breach: the
buffer raises :class:`~tandem.errors.DecodeError` and refuses all further input (the stream has
lost framing; the only remedy is to drop the connection).

Memory is bounded: after every :meth:`FrameBuffer.feed` the buffer holds less than one message
(at most ``max_size - 1`` bytes), because the length is validated as soon as its two bytes
arrive and complete messages are handed out immediately.
"""

from __future__ import annotations

from tandem.errors import DecodeError

HEADER_SIZE = 12
MAX_MESSAGE_SIZE = 2048  # ISC drops the link above this; draft-12 gives no larger figure


class FrameBuffer:
    """Accumulates stream bytes and yields whole failover messages."""

    __slots__ = ("_broken", "_buf", "max_size")

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        if not HEADER_SIZE <= max_size <= 0xFFFF:
            raise ValueError(f"max_size must be in [{HEADER_SIZE}, 65535], got {max_size}")
        self.max_size = max_size
        self._buf = bytearray()
        self._broken = False

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a message."""
        return len(self._buf)

    @property
    def broken(self) -> bool:
        """True once a bad length was seen; the buffer then rejects all input."""
        return self._broken

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data``; return every message completed by it, in stream order."""
        if self._broken:
            raise DecodeError("frame buffer unusable after a framing error")
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        limit = self.max_size
        while end - pos >= 2:
            length = (buf[pos] << 8) | buf[pos + 1]
            if length < HEADER_SIZE or length > limit:
                self._broken = True
                self._buf = bytearray()
                raise DecodeError(
                    f"failover message length {length} outside [{HEADER_SIZE}, {limit}]"
                )
            if end - pos < length:
                break
            out.append(bytes(buf[pos : pos + length]))
            pos += length
        if pos:
            del buf[:pos]
        return out

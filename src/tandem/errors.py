"""One exception tree for the whole project."""

from __future__ import annotations


class TandemError(Exception):
    """Base of every error Tandem raises on purpose."""


class ConfigError(TandemError):
    """A configuration was rejected; ``problems`` lists every problem with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) if self.problems else "invalid configuration")


class DecodeError(TandemError):
    """Bytes that are not a valid message. The only error a decoder may raise."""


class PeerProtocolError(TandemError):
    """The failover partner broke the protocol; ``reject_reason`` is the draft-12 code."""

    def __init__(self, message: str, reject_reason: int) -> None:
        self.reject_reason = reject_reason
        super().__init__(message)


class StoreError(TandemError):
    """The lease store cannot be opened, read or written."""

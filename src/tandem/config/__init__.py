"""Configuration: one TOML file, validated in one place (:func:`load`)."""

from tandem.config.schema import (
    Config,
    CustomOption,
    LeaseTimes,
    OptionSet,
    Pool,
    Reservation,
    ServerSection,
    StoreSection,
    Subnet,
)

__all__ = [
    "Config",
    "CustomOption",
    "LeaseTimes",
    "OptionSet",
    "Pool",
    "Reservation",
    "ServerSection",
    "StoreSection",
    "Subnet",
]

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
from tandem.config.validate import (
    SERVER_CONTROLLED_OPTIONS,
    check,
    custom_option_bytes,
    load,
    load_text,
    parse_client_id,
    parse_hex,
    parse_hw_address,
    pool_address_count,
    subnet_id,
)

__all__ = [
    "SERVER_CONTROLLED_OPTIONS",
    "Config",
    "CustomOption",
    "LeaseTimes",
    "OptionSet",
    "Pool",
    "Reservation",
    "ServerSection",
    "StoreSection",
    "Subnet",
    "check",
    "custom_option_bytes",
    "load",
    "load_text",
    "parse_client_id",
    "parse_hex",
    "parse_hw_address",
    "pool_address_count",
    "subnet_id",
]

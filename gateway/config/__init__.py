"""Read the TOML configuration once into frozen, typed objects; every mistake names its key.

Each key is declared once, on its dataclass field (`schema`): the field's default is the key's
default, and its metadata carries the rule that reads it (`rules`: bounds, choices, conversion
by a function of `values`, secrecy). One reader (`reading`) walks the dataclasses (tables,
arrays of tables, the `*_file` form of secrets), a table at a time (`table`), and `masked()`
(`declared`) follows the same metadata, so a new secret cannot be printed in clear. Checks that
involve more than one key are small functions in `schema._CHECKS`.

The modules depend one way: values and table, then rules, then schema, then reading and
declared. This package exports what the rest of the program uses.
"""

from gateway.config.declared import MASK, DeclaredKey, declared_keys, masked, secret_values
from gateway.config.reading import default_path, load, parse
from gateway.config.schema import (
    DEFAULT_DROP_ON,
    Config,
    GoipConfig,
    HookConfig,
    HttpConfig,
    HttpPeerConfig,
    IdsConfig,
    LogConfig,
    ModemConfig,
    ModemsConfig,
    NumberQueryConfig,
    PartnerConfig,
    SimConfig,
    SmppAccountConfig,
    SmppClientConfig,
    SmppServerConfig,
    StoreConfig,
    UpstreamConfig,
    YeastarConfig,
)

__all__ = [
    "DEFAULT_DROP_ON",
    "MASK",
    "Config",
    "DeclaredKey",
    "GoipConfig",
    "HookConfig",
    "HttpConfig",
    "HttpPeerConfig",
    "IdsConfig",
    "LogConfig",
    "ModemConfig",
    "ModemsConfig",
    "NumberQueryConfig",
    "PartnerConfig",
    "SimConfig",
    "SmppAccountConfig",
    "SmppClientConfig",
    "SmppServerConfig",
    "StoreConfig",
    "UpstreamConfig",
    "YeastarConfig",
    "declared_keys",
    "default_path",
    "load",
    "masked",
    "parse",
    "secret_values",
]

"""The error hierarchy: user mistakes, transient faults and permanent faults kept apart."""


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is wrong; the message names the key and what is expected (exit 2)."""


class UsageError(GatewayError):
    """Bad command-line arguments; the message names the flag (exit 2)."""


class StoreError(GatewayError):
    """The outbox could not do what was asked."""


class StoreUnavailable(StoreError):
    """The outbox cannot commit right now (disk full, locked, I/O error); nothing was taken."""


class StoreTooNew(StoreError):
    """The database was written by a newer version of the gateway; refuse to touch it."""


class DecodeError(GatewayError):
    """Bytes from a peer (modem, gateway box, file) could not be understood."""

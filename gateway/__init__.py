"""Partner SMS gateway: takes SMS from modems and gateways, delivers them to Onlinesim."""

__version__ = "0.1.0"

"""The simulated modem lives in the package (the demo uses it too); tests import it from here."""

from gateway.play.modem import PROFILES, FakeModem, Profile

__all__ = ["PROFILES", "FakeModem", "Profile"]

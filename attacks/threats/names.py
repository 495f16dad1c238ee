"""The threat models' settings a command offers, without the code that draws the attack sets (no pandas):
a parser reads them at Python's start-up cost, :mod:`attacks.threats.splits` imports them from here."""

from __future__ import annotations

#: Independent draws of the attack sets unless told otherwise (the paper: 5 attacks).
DEFAULT_REPEATS = 5

"""How the chapters say a measured ratio in words: the way round that is at least 1, and a word."""
from __future__ import annotations

import math

__all__ = ["times", "word"]


def times(ratio: float) -> float:
    """``ratio`` said the way round that is at least 1 ("2 times slower" rather than "0.5 times"),
    rounded to 2 decimals; nan stays nan."""
    if not math.isfinite(ratio):
        return math.nan
    return float(round(ratio if ratio >= 1 else 1 / ratio, 2))


def word(ratio: float, above: str = "faster", below: str = "slower") -> str:
    """``above`` when ``ratio`` > 1, else ``below``; '-' for nan (a comparison that could not be made)."""
    if not math.isfinite(ratio):
        return "-"
    return above if ratio > 1 else below

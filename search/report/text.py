"""How numbers and counts are written in the report, its dashboard copy and the console."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search.report.results import MeanStd


def fmt(x: float | int | None, digits: int = 4) -> str:
    """The one number format of the report (results.json keeps full precision)."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.{digits}f}"


def fmt_ref(x: float | None) -> str:
    """A reference figure with the precision its source gave (0.89 stays 0.89, not 0.8900)."""
    return "–" if x is None else f"{x:g}"


def fmt_ms(s: MeanStd, digits: int = 4) -> str:
    """mean ± std over seeds; the mean alone for a single seed."""
    if s.std is None:
        return fmt(s.mean, digits)
    return f"{fmt(s.mean, digits)} ± {fmt(s.std, digits)}"


def plural(n: int, noun: str) -> str:
    """``3 seeds``, ``1 seed``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def epochs(n: int) -> str:
    return plural(n, "epoch")

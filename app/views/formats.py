"""How the pages write a number."""

from __future__ import annotations


def pct(value: float) -> str:
    """A fraction as a percentage with two decimals; ``-`` for NaN (nothing to show).

    Example:
        >>> pct(0.61234), pct(float("nan"))
        ('61.23%', '-')
    """
    return "-" if value != value else f"{100 * value:.2f}%"

"""Errors a user can fix (printed by the CLI as one line, no traceback), and first_line."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or environment; the message names the fix.

    ``exit_code`` follows the CLI convention: 2 for usage errors, 1 for runtime errors.
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(UserError):
    exit_code = 2


class InvalidConfig(UserError):
    """A model or training configuration that cannot be built (e.g. a feature map shrunk to 0)."""

    exit_code = 2


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_range(
    option: str, value: float, low: float, high: float | None = None, above: bool = False
) -> None:
    """The range rule of a numeric option, worded as the command line's own parser words it
    (``Invalid value for '--trials': 0 is not in the range x>=1.``), for library use too."""
    bad_low = value < low or (above and value == low) or value != value  # nan fails every bound
    if bad_low or (high is not None and value > high):
        left = f"{low}<" if above else f"{low}<="
        bound = f"{left}x<={high}" if high is not None else f"x>{low}" if above else f"x>={low}"
        raise UsageError(f"Invalid value for '{option}': {value} is not in the range {bound}.")


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (a line break, a tab, a control
    character from the command line such as \\x1e, which ``splitlines`` breaks on) as its
    escape, so that an error echoing what the user typed stays one line."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )

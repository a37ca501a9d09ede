"""The one exception type that means "the user's input is wrong", so the CLI can report it in one
line and exit 2 instead of printing a traceback."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable


class ShoptuneError(Exception):
    """A user error: bad input file, bad option, missing model. The message is the whole story."""


def located(path: object, line: int | None, field: str | None, problem: str) -> ShoptuneError:
    """An error that names the file, line and field, the three things needed to fix bad data."""
    where = f"{path}" + (f":{line}" if line is not None else "")
    what = f" field '{field}':" if field else ""
    return ShoptuneError(f"{where}:{what} {problem}")


def require_extra(module: str, extra: str, wanted_by: str) -> None:
    """A package of an optional extra, checked before it is needed: one line naming the extra to install."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ShoptuneError(f"{wanted_by} needs {module}, which is not installed: pip install 'shoptune[{extra}]'")


def near(name: str, options: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the closest of `options`, or nothing when none is close."""
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


_SAID: set[str] = set()


def note(text: str) -> None:
    """Tell the user, once per process, something shoptune decided for them (not an error: the run goes on)."""
    if text not in _SAID:
        _SAID.add(text)
        print(f"note: {text}", file=sys.stderr, flush=True)

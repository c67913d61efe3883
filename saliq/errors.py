"""Errors a user can act on: one line, naming what is wrong and how to fix it.

The CLI prints a `SaliqError` as `saliq: <message>` and exits with code 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["ConfigError", "DataNotFound", "SaliqError", "TrialDiverged", "format_validation_error"]


class SaliqError(Exception):
    """Bad input or an unusable environment, explained in one line."""


class ConfigError(SaliqError):
    """A trial config or sweep spec that does not validate."""


class DataNotFound(SaliqError):
    """A dataset with no offline source and no download allowed."""


class TrialDiverged(SaliqError):
    """Training produced a non-finite loss; the trial cannot give meaningful metrics."""


_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def _path(prefix: str, loc: tuple) -> str:
    """`trial.precision.layers['layer1.0.conv1'].weight_bits` from a pydantic location."""
    out = prefix
    for item in loc:
        if isinstance(item, int):
            out += f"[{item}]"
        elif str(item).isidentifier():
            out += f".{item}" if out else str(item)
        else:
            out += f"[{str(item)!r}]"
    return out or "(top level)"


def _message(error: dict) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling against the README)"
    if kind == "missing":
        return "required key is missing"
    msg = error["msg"]
    for p in _PYDANTIC_PREFIXES:
        if msg.startswith(p):
            msg = msg[len(p) :]
    if kind != "value_error":
        shown = repr(error.get("input"))
        if len(shown) > 60:
            shown = shown[:57] + "..."
        msg = f"{shown}: {msg[0].lower()}{msg[1:]}"
    return msg


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line for all of a pydantic error's entries: `path: reason; path: reason`."""
    seen: list[str] = []
    for error in err.errors():
        raw = error["loc"]
        # a discriminated union's tag "<k>" announces the field k after it: k stays
        loc = tuple(p for i, p in enumerate(raw)
                    if not _is_union_tag(p) or (i and str(raw[i - 1]) == f"<{p}>"))
        line = f"{_path(prefix, loc)}: {_message(error)}"
        if line not in seen:
            seen.append(line)
    return "; ".join(seen)


def _is_union_tag(part: object) -> bool:
    # pydantic adds the union member's name ("str", "ModelConfig", "function-after[...]", a
    # discriminated union's tag, which saliq writes "<tag>") to the location of errors inside
    # unions; it is noise to a user.
    text = str(part)
    if text.startswith("<") and text.endswith(">"):
        return True
    return text in ("str", "int", "float", "bool", "list", "dict") or (
        text[:1].isupper() and text.isidentifier() and text.endswith("Config")
    ) or text.startswith(("function-", "tagged-union", "constrained-"))

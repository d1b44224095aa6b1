"""Reading a decoded JSON object field by field against the table in `lib_mixture.fields`.

`Checker` collects every problem instead of stopping at the first, each as
``path: message`` with the field's instance path (``regions[2].width``), the value and what
is allowed, so that one error lists everything a user has to fix.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from .fields import AUTO, FIELD, Field, children, keys


def show(value: Any) -> str:
    """A value as JSON, cut to 60 characters (a hostile value stays short in a message)."""
    text = json.dumps(value) if not isinstance(value, (set, tuple)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _fallback(f: Field) -> Any:
    return None if f.required else f.default


class Checker:
    """Collects problems while reading one preset."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path or 'preset'}: {message}")

    def keys(self, obj: Any, where: str, table: str | None = None) -> bool:
        """Check that ``obj`` is an object with only the keys the table allows at ``table``
        (default: ``where``) and every required one; False when it is not an object."""
        table = where if table is None else table
        allowed = keys(table)
        if not isinstance(obj, dict):
            self.fail(where, f"expected an object, got {show(obj)}")
            return False
        for key in obj:
            if key not in allowed:
                name = str(key) if len(str(key)) <= 40 else str(key)[:37] + "..."
                hint = difflib.get_close_matches(name, allowed, n=1)
                did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.fail(join(where, name), f"unknown key{did_you_mean}; allowed keys: {', '.join(allowed)}")
        for key in allowed:
            if FIELD[join(table, key)].required and key not in obj:
                self.fail(join(where, key), "is required")
        return True

    def field(self, obj: dict, path: str, where: str = "", *, lo: Any = None, hi: Any = None,
              note: str = "", fraction: bool = False, max_length: int | None = None) -> Any:
        """The value of table field ``path`` in ``obj`` (the object at instance path ``where``),
        checked against its row; the row's default when the key is absent or the value is bad.

        ``lo``/``hi`` replace the row's bounds where they depend on other fields; ``note`` is
        appended to the range in messages; ``fraction`` uses the row's fraction bounds;
        ``max_length`` replaces a string row's (the server's text limit)."""
        f = FIELD[path]
        if f.key not in obj:
            return None if f.required else f.default
        value = obj[f.key]
        at = join(where, f.key)
        if value is None and f.nullable:
            return None
        if f.auto and value == AUTO:
            return AUTO
        if f.auto and isinstance(value, str) and value.strip().lower() == AUTO:
            self.fail(at, f'{show(value)}: write "{AUTO}" (lower case) for a value chosen at generation')
            return _fallback(f)
        if f.kind == "enum":
            return self._choice(f, value, at)
        if f.kind == "string":
            return self._text(f, value, at, max_length or f.max_length)
        if fraction:
            (lo, hi), exclusive = f.fraction, bool(f.minimum)
        else:
            lo = f.minimum if lo is None else lo
            hi = f.maximum if hi is None else hi
            exclusive = f.exclusive_minimum
        auto = f' or "{AUTO}"' if f.auto else ""
        null = " or null" if f.nullable else ""
        return self._number(f, value, at, lo, hi, exclusive, f.range_text(lo, hi, fraction) + note + auto + null)

    def _number(self, f: Field, value: Any, at: str, lo: Any, hi: Any, exclusive: bool, allowed: str) -> Any:
        integer = f.kind == "integer"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (
                float("inf"), float("-inf")) or (integer and isinstance(value, float) and not value.is_integer()):
            self.fail(at, f"expected {'an integer' if integer else 'a number'} in {allowed}, got {show(value)}")
            return _fallback(f)
        if integer:
            value = int(value)
        if value < lo or value > hi or (exclusive and value == lo):
            self.fail(at, f"{value} is out of range; allowed {allowed}")
            return _fallback(f)
        if f.multiple_of and value % f.multiple_of:
            down = value // f.multiple_of * f.multiple_of
            self.fail(at, f"{value} is not a multiple of {f.multiple_of} px (one latent cell); "
                          f"nearest: {down} or {down + f.multiple_of}")
            return _fallback(f)
        return value

    def _choice(self, f: Field, value: Any, at: str) -> Any:
        if value not in f.options:
            self.fail(at, f"{show(value)} is not allowed; allowed: {', '.join(repr(o) for o in f.options)}")
            return _fallback(f)
        return value

    def _text(self, f: Field, value: Any, at: str, max_length: int | None) -> Any:
        if not isinstance(value, str):
            self.fail(at, f"expected a string, got {show(value)}")
            return _fallback(f)
        if max_length is not None and len(value) > max_length:
            self.fail(at, f"is {len(value)} characters long; allowed at most {max_length}")
            return _fallback(f)
        return value

    def values(self, obj: dict, table: str, where: str, text_limit: int | None = None,
               **given: Any) -> dict[str, Any]:
        """Every scalar field of the object at ``table`` read from ``obj`` (`field`), by key, in
        the table's order; keys in ``given`` take the value given (fields read with their own
        rules); ``text_limit`` bounds strings the table leaves unbounded (prompts). A new scalar
        row of the table is read here without other code."""
        out = {}
        for f in children(table):
            if f.key in given:
                out[f.key] = given[f.key]
            elif f.kind not in ("object", "list"):
                out[f.key] = self.field(obj, f.path, where, max_length=text_limit if f.kind == "string" else None)
        return out

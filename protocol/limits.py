"""msgspec's constraint errors as plain words naming the limit, for requests and config.toml.

msgspec reports only the bound that was crossed (`Expected `float` <= 1000000.0 - at `$.cost_usd``);
a person wants the whole rule ("must be a number from 0 to 1000000"). The rule is read back
from the type the value was decoded into (`msgspec.inspect`), so the limits stay declared once,
on the types themselves.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import msgspec

_TOKEN = re.compile(r"\[[^\]]*\]|[^.\[]+")


@cache
def _info(root: Any) -> msgspec.inspect.Type:
    return msgspec.inspect.type_info(root)


def _unwrap(t: Any) -> Any:
    """`X | None` → X (the constrained member of a union)."""
    if isinstance(t, msgspec.inspect.UnionType):
        members = [m for m in t.types if not isinstance(m, msgspec.inspect.NoneType)]
        return members[0] if len(members) == 1 else t
    return t


def field_type(root: Any, where: str) -> Any | None:
    """The inspected type at `where` (`tags[3]`, `cmd[0]`, `max_workers`) below `root`, or None."""
    t: Any = _unwrap(_info(root))
    for token in _TOKEN.findall(where):
        if token.startswith("["):
            if isinstance(t, (msgspec.inspect.ListType, msgspec.inspect.SetType, msgspec.inspect.VarTupleType)):
                t = t.item_type
            elif isinstance(t, msgspec.inspect.DictType):
                t = t.value_type
            else:
                return None
        else:
            if not isinstance(t, msgspec.inspect.StructType):
                return None
            found = next((f for f in t.fields if f.encode_name == token), None)
            if found is None:
                return None
            t = found.type
        t = _unwrap(t)
    return t


def _num(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _range(t: Any, finite: bool) -> str:
    whole = isinstance(t, msgspec.inspect.IntType)
    kind = "a whole number" if whole else ("a finite number" if finite else "a number")
    lo = t.ge if t.ge is not None else t.gt
    hi = t.le if t.le is not None else t.lt
    if lo is not None and hi is not None:
        return f"must be {kind} from {_num(lo)} to {_num(hi)}"
    if lo is not None:
        return f"must be {kind} of at least {_num(lo)}"
    return f"must be {kind} of at most {_num(hi)}"


def describe(root: Any, where: str, text: str, *, finite: bool = False) -> str | None:
    """The broken rule as words ("is longer than 500 characters"), or None when `text`
    is not a constraint error this module knows."""
    t = field_type(root, where) if where else None
    if t is None:
        return None
    if "matching regex" in text and isinstance(t, msgspec.inspect.StrType):
        from .messages import NO_NUL

        return "cannot contain a NUL byte" if t.pattern == NO_NUL else "has the wrong form"
    if "of length <=" in text:
        if isinstance(t, msgspec.inspect.StrType) and t.max_length is not None:
            return f"is longer than {t.max_length} characters"
        if getattr(t, "max_length", None) is not None:
            return f"can hold at most {t.max_length} items"
    if "of length >=" in text and getattr(t, "min_length", None) is not None:
        return f"needs at least {t.min_length} " + ("characters" if isinstance(t, msgspec.inspect.StrType) else "items")
    if re.search(r"[<>]=? ", text) and isinstance(t, (msgspec.inspect.IntType, msgspec.inspect.FloatType)):
        return _range(t, finite)
    return None

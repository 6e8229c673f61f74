"""Decode raw builtins into msgspec Structs field by field, collecting every error.

msgspec stops at the first invalid field. To list them all, a Struct is walked
field by field: nested Structs and tuples of Structs are recursed into, and every
other field is decoded on its own with `msgspec.convert` against its annotated
type. Rules that span fields run on what decoded ("partial" values, where a field
that failed is `INVALID`), so they can be reported next to the per-field errors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

from domain.errors import FieldError

INVALID: Any = msgspec.UNSET
"""Stands for a value that failed to decode, inside a partial value."""

Partial = dict[str, Any]
Rule = Callable[[Partial], Iterable[tuple[str, str]]]
"""Cross-field rule: partial values in, (path relative to the struct, message) out."""

_KIND = {
    "str": "a string",
    "bool": "a boolean",
    "int": "an integer",
    "float": "a number",
    "array": "an array",
    "object": "an object",
    "null": "null",
}
_EXPECTED_TYPE = re.compile(r"^Expected `([^`]*)`, got `[^`]*`")
_LENGTH = re.compile(r"^Expected `(str|array)` of length (<=|>=) (\d+)")
_REGEX = re.compile(r"^Expected `str` matching regex ")
_AT = re.compile(r" - at `\$([^`]*)`$")


def collect(
    tp: type[msgspec.Struct],
    raw: object,
    path: str,
    rules: Mapping[type, Rule],
    pattern_messages: Mapping[str, str],
) -> tuple[Any, list[FieldError]]:
    """Decode `raw` as `tp` without stopping at the first error; (partial value, errors)."""
    walker = _Walker(rules, pattern_messages)
    value = walker.value(tp, raw, path)
    return value, walker.errors


class _Walker:
    def __init__(self, rules: Mapping[type, Rule], pattern_messages: Mapping[str, str]) -> None:
        self.rules = rules
        self.pattern_messages = pattern_messages
        self.errors: list[FieldError] = []

    def value(self, tp: Any, raw: object, path: str) -> Any:
        bare, metas = _unwrap(tp)
        if _is_struct(bare):
            return self.struct(bare, raw, path)
        item = _struct_items(bare)
        if item is not None:
            return self.items(item, metas, raw, path)
        return self.leaf(tp, raw, path)

    def struct(self, cls: type[msgspec.Struct], raw: object, path: str) -> Any:
        if not isinstance(raw, dict):
            self.errors.append(FieldError(path, "must be an object"))
            return INVALID
        fields = {f.name: f for f in msgspec.structs.fields(cls)}
        for key in raw:
            if key not in fields:
                self.errors.append(FieldError(f"{path}.{key}", "unknown field"))
        partial: Partial = {}
        for name, info in fields.items():
            if name in raw:
                partial[name] = self.value(info.type, raw[name], f"{path}.{name}")
            elif info.required:
                self.errors.append(FieldError(f"{path}.{name}", "required"))
                partial[name] = INVALID
            elif info.default_factory is not msgspec.NODEFAULT:
                partial[name] = info.default_factory()
            else:
                partial[name] = info.default
        rule = self.rules.get(cls)
        if rule is not None:
            for relative, message in rule(partial):
                self.errors.append(FieldError(f"{path}.{relative}", message))
        return partial

    def items(self, item: type[msgspec.Struct], metas: list[msgspec.Meta], raw: object, path: str) -> Any:
        if not isinstance(raw, (list, tuple)):
            self.errors.append(FieldError(path, "must be an array"))
            return INVALID
        for meta in metas:
            if meta.max_length is not None and len(raw) > meta.max_length:
                self.errors.append(FieldError(path, f"must have at most {_count(meta.max_length, 'items')}"))
            if meta.min_length is not None and len(raw) < meta.min_length:
                self.errors.append(FieldError(path, f"must have at least {_count(meta.min_length, 'items')}"))
        return [self.value(item, element, f"{path}[{i}]") for i, element in enumerate(raw)]

    def leaf(self, tp: Any, raw: object, path: str) -> Any:
        try:
            return msgspec.convert(raw, tp)
        except msgspec.ValidationError as exc:
            message, suffix = split_msgspec_error(str(exc))
            self.errors.append(FieldError(path + suffix, self.explain(tp, message)))
            return INVALID

    def explain(self, tp: Any, message: str) -> str:
        bare, _ = _unwrap(tp)
        if get_origin(bare) is Literal:
            return "must be one of: " + ", ".join(map(str, get_args(bare)))
        if _REGEX.match(message):
            found = (self.pattern_messages.get(p) for p in _patterns(tp))
            return next((f for f in found if f), "has an invalid format")
        return humanize(message)


def split_msgspec_error(text: str) -> tuple[str, str]:
    """A msgspec error message, split into (message, path suffix such as `[3]` or `.name`)."""
    match = _AT.search(text)
    if match is None:
        return text, ""
    return text[: match.start()], match.group(1)


def humanize(message: str) -> str:
    """Turn a msgspec error message into one an API client can act on."""
    if m := _EXPECTED_TYPE.match(message):
        kinds = [_KIND.get(k.strip(), k.strip()) for k in m.group(1).split("|")]
        return "must be " + " or ".join(kinds)
    if m := _LENGTH.match(message):
        unit = "characters" if m.group(1) == "str" else "items"
        bound = "at most" if m.group(2) == "<=" else "at least"
        if m.group(1) == "str" and m.group(3) == "1" and bound == "at least":
            return "must not be empty"
        return f"must {'be' if unit == 'characters' else 'have'} {bound} {_count(int(m.group(3)), unit)}"
    return message[:1].lower() + message[1:]


def _count(n: int, plural: str) -> str:
    return f"{n} {plural if n != 1 else plural[:-1]}"


def _unwrap(tp: Any) -> tuple[Any, list[msgspec.Meta]]:
    metas: list[msgspec.Meta] = []
    while get_origin(tp) is Annotated:
        tp, *extras = get_args(tp)
        metas.extend(e for e in extras if isinstance(e, msgspec.Meta))
    return tp, metas


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _struct_items(tp: Any) -> type[msgspec.Struct] | None:
    if get_origin(tp) in (tuple, list):
        args = get_args(tp)
        item = _unwrap(args[0])[0] if args else None
        if _is_struct(item) and (get_origin(tp) is list or args[1:] == (...,)):
            return item
    return None


def _patterns(tp: Any) -> Iterable[str]:
    """Every `Meta.pattern` in a type, its unions and its items (a leaf holds one at most)."""
    bare, metas = _unwrap(tp)
    yield from (m.pattern for m in metas if m.pattern is not None)
    for arg in get_args(bare):
        if arg is not ...:
            yield from _patterns(arg)

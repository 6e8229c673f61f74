"""Widget config v1: a value object decoded from `{"v1": {...}}`, every field defaulted.

`parse_config` is the only way in from untrusted input: it reports every invalid
field at once, with dotted paths rooted at `config`. Lists are stored as tuples so
that a config is immutable all the way down; `config_to_builtins` gives JSON lists.

`appearance.bubble_icon` is one of a fixed set of icon names, not a URL: custom
images belong to `branding.avatar_url` / `branding.logo_url`, and a fixed set keeps
the launcher renderable without fetching anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from domain.config_validation import INVALID, Partial, collect, split_msgspec_error
from domain.errors import FieldError, ValidationError

_ONE_LINE = r"^[^\x00-\x1f\x7f-\x9f]*\Z"
_MULTI_LINE = r"^[^\x00-\x09\x0b-\x1f\x7f-\x9f]*\Z"
_COLOR = r"^#[0-9a-fA-F]{6}\Z"
_SLUG = r"^[a-z0-9][a-z0-9_-]{0,39}\Z"
_LOCALE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*\Z"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_CONTEXT_KEY = r"^[a-z][a-z0-9_]{0,39}\Z"
_HTTPS_URL = rf"^https://{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?(?:[/?#][^\s\x00-\x1f\x7f-\x9f\"'<>\\^`{{|}}]*)?\Z"

PATTERN_MESSAGES = {
    _ONE_LINE: "must not contain control characters or line breaks",
    _MULTI_LINE: "must not contain control characters other than line breaks",
    _COLOR: "must match #RRGGBB",
    _SLUG: "must be 1 to 40 lower-case letters, digits, '-' or '_', not starting with '-' or '_'",
    _LOCALE: "must be a BCP 47 language tag such as 'en' or 'pt-BR'",
    _HTTPS_URL: "must be an https URL",
    _CONTEXT_KEY: "must be 1 to 40 lower-case letters, digits or '_', starting with a letter",
}


def _line(min_length: int, max_length: int) -> Any:
    return Annotated[str, Meta(min_length=min_length, max_length=max_length, pattern=_ONE_LINE)]


def _text(max_length: int, min_length: int = 0) -> Any:
    return Annotated[str, Meta(min_length=min_length, max_length=max_length, pattern=_MULTI_LINE)]


LauncherLabel = _line(0, 40)
DisplayName = _line(1, 60)
Placeholder = _line(0, 120)
FeedbackPrompt = _line(0, 200)
ActionLabel = _line(1, 40)
Title = _line(1, 80)
WelcomeMessage = _text(500)
ActionMessage = _text(500, min_length=1)
Color = Annotated[str, Meta(pattern=_COLOR)]
Slug = Annotated[str, Meta(pattern=_SLUG)]
HttpsUrl = Annotated[str, Meta(max_length=2048, pattern=_HTTPS_URL)]
Locale = Annotated[str, Meta(max_length=35, pattern=_LOCALE)]
FieldType = Literal["text", "email", "phone", "textarea", "select", "checkbox"]


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class Appearance(_Section, kw_only=True):
    theme: Literal["light", "dark", "auto"] = "auto"
    primary_color: Color = "#2563EB"
    accent_color: Color = "#F59E0B"
    position: Literal["bottom-right", "bottom-left"] = "bottom-right"
    launcher_label: LauncherLabel = "Chat with us"
    bubble_icon: Literal["chat", "headset", "sparkle", "wave"] = "chat"


class Branding(_Section, kw_only=True):
    display_name: DisplayName = "Assistant"
    avatar_url: HttpsUrl | None = None
    logo_url: HttpsUrl | None = None
    show_powered_by: bool = True


class TextChannel(_Section, kw_only=True):
    enabled: bool = True
    welcome_message: WelcomeMessage = "Hi! How can I help you today?"
    input_placeholder: Placeholder = "Type a message..."


class VoiceChannel(_Section, kw_only=True):
    enabled: bool = True
    mode: Literal["push_to_talk", "open_mic"] = "push_to_talk"


class QuickAction(_Section, kw_only=True):
    label: ActionLabel
    message: ActionMessage


class FormField(_Section, kw_only=True):
    name: Slug
    label: Title
    type: FieldType
    required: bool = False
    options: Annotated[tuple[Title, ...], Meta(min_length=1, max_length=50)] | None = None


class FormDefinition(_Section, kw_only=True):
    id: Slug
    title: Title
    trigger: Literal["pre_chat", "agent_request"] = "agent_request"
    fields: Annotated[tuple[FormField, ...], Meta(min_length=1, max_length=20)]


class Feedback(_Section, kw_only=True):
    enabled: bool = False
    type: Literal["thumbs", "stars", "scale_5"] = "thumbs"
    prompt: FeedbackPrompt = "How was this conversation?"
    allow_comment: bool = True


class Identity(_Section, kw_only=True):
    """Whether visitors may (`optional`) or must (`required`) bring a token the site signed; `off` ignores tokens."""

    mode: Literal["off", "optional", "required"] = "off"


class ContextKey(_Section, kw_only=True):
    """One key a page or a visitor token may pass to the agent; `max_length` bounds strings only."""

    key: Annotated[str, Meta(pattern=_CONTEXT_KEY)]
    type: Literal["string", "number", "boolean"]
    max_length: Annotated[int, Meta(ge=1, le=2000)] | None = None


class ConfigV1(_Section, kw_only=True):
    appearance: Appearance = msgspec.field(default_factory=Appearance)
    branding: Branding = msgspec.field(default_factory=Branding)
    text: TextChannel = msgspec.field(default_factory=TextChannel)
    voice: VoiceChannel = msgspec.field(default_factory=VoiceChannel)
    quick_actions: Annotated[tuple[QuickAction, ...], Meta(max_length=8)] = ()
    forms: Annotated[tuple[FormDefinition, ...], Meta(max_length=10)] = ()
    feedback: Feedback = msgspec.field(default_factory=Feedback)
    locale: Locale | None = None
    identity: Identity = msgspec.field(default_factory=Identity)
    context: Annotated[tuple[ContextKey, ...], Meta(max_length=20)] = ()


class WidgetConfig(_Section, kw_only=True):
    v1: ConfigV1 = msgspec.field(default_factory=ConfigV1)


def parse_config(raw: object) -> WidgetConfig:
    """Decode a raw config; `ValidationError` lists every invalid field under `config`."""
    _, errors = collect(WidgetConfig, raw, "config", _RULES, PATTERN_MESSAGES)
    if errors:
        raise ValidationError(errors, "The widget config is not valid.")
    try:
        return msgspec.convert(raw, WidgetConfig)
    except msgspec.ValidationError as exc:  # the walker should have caught it; never a 500
        message, suffix = split_msgspec_error(str(exc))
        raise ValidationError([FieldError("config" + suffix, message)], "The widget config is not valid.") from exc


def config_to_builtins(cfg: WidgetConfig) -> dict[str, Any]:
    """The full config, every default filled in, as JSON-ready builtins (lists, not tuples)."""
    return msgspec.json.decode(msgspec.json.encode(cfg))


def find_form(cfg: WidgetConfig, form_id: str) -> FormDefinition | None:
    """The form with this id, if the config defines one."""
    return next((form for form in cfg.v1.forms if form.id == form_id), None)


def changed_paths(old: WidgetConfig | dict[str, Any], new: WidgetConfig | dict[str, Any]) -> list[str]:
    """Sorted dotted paths (`v1.appearance.theme`) of the leaves that differ; lists count as leaves.

    Takes configs or their full builtin forms (as stored in events), so that a
    command need not parse the stored config again to compare it.
    """
    if isinstance(old, dict) or isinstance(new, dict):
        old_builtins = old if isinstance(old, dict) else config_to_builtins(old)
        new_builtins = new if isinstance(new, dict) else config_to_builtins(new)
        return sorted(_changed_builtins(old_builtins, new_builtins, ""))
    return sorted(_changed(old, new, ""))


def _changed_builtins(old: dict[str, Any], new: dict[str, Any], prefix: str) -> Iterable[str]:
    for name in old.keys() | new.keys():
        before, after = old.get(name), new.get(name)
        if isinstance(before, dict) and isinstance(after, dict):
            yield from _changed_builtins(before, after, f"{prefix}{name}.")
        elif before != after:
            yield prefix + name


def _changed(old: msgspec.Struct, new: msgspec.Struct, prefix: str) -> Iterable[str]:
    for name in old.__struct_fields__:
        before, after = getattr(old, name), getattr(new, name)
        if isinstance(before, msgspec.Struct) and type(before) is type(after):
            yield from _changed(before, after, f"{prefix}{name}.")
        elif before != after:
            yield prefix + name


def merge_patch(target: object, patch: object) -> object:
    """Apply an RFC 7396 JSON merge patch, giving a new value; the inputs are never mutated.

    Unchanged sub-values are shared with the inputs, not copied. Iterative, so a
    deeply nested patch cannot exhaust the interpreter's stack.
    """
    if not isinstance(patch, dict):
        return patch
    result: dict[Any, Any] = {}
    pending: list[tuple[dict[Any, Any], object, dict[Any, Any]]] = [(result, target, patch)]
    while pending:
        out, before, changes = pending.pop()
        if isinstance(before, dict):
            out.update(before)
        for name, value in changes.items():
            if value is None:
                out.pop(name, None)
            elif isinstance(value, dict):
                child: dict[Any, Any] = {}
                pending.append((child, out.get(name), value))
                out[name] = child
            else:
                out[name] = value
    return result


def _form_field_rule(field: Partial) -> Iterable[tuple[str, str]]:
    kind, options = field["type"], field["options"]
    if kind is INVALID or options is INVALID:
        return
    if kind == "select" and options is None:
        yield "options", "required for select fields"
    elif kind != "select" and options is not None:
        yield "options", "only allowed for select fields"
    elif options is not None:
        yield from ((f"options[{i}]", "duplicate option") for i in _duplicates(options))


def _form_rule(form: Partial) -> Iterable[tuple[str, str]]:
    names = [f["name"] if isinstance(f, dict) else INVALID for f in _items(form["fields"])]
    yield from ((f"fields[{i}].name", "duplicate field name") for i in _duplicates(names))


def _context_key_rule(declared: Partial) -> Iterable[tuple[str, str]]:
    if declared["max_length"] not in (None, INVALID) and declared["type"] not in ("string", INVALID):
        yield "max_length", "only allowed for string keys"


def _config_rule(v1: Partial) -> Iterable[tuple[str, str]]:
    keys = [c["key"] if isinstance(c, dict) else INVALID for c in _items(v1["context"])]
    yield from ((f"context[{i}].key", "duplicate context key") for i in _duplicates(keys))
    forms = [f if isinstance(f, dict) else {} for f in _items(v1["forms"])]
    ids = [f.get("id", INVALID) for f in forms]
    yield from ((f"forms[{i}].id", "duplicate form id") for i in _duplicates(ids))
    pre_chat = [i for i, f in enumerate(forms) if f.get("trigger") == "pre_chat"]
    yield from ((f"forms[{i}].trigger", "only one pre_chat form is allowed") for i in pre_chat[1:])


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _duplicates(values: list[Any]) -> Iterable[int]:
    """Indices of the values seen before (the first occurrence is not a duplicate)."""
    counts = Counter(v for v in values if v is not INVALID)
    seen: set[Any] = set()
    for i, value in enumerate(values):
        if value is INVALID or counts[value] < 2:
            continue
        if value in seen:
            yield i
        seen.add(value)


_RULES = {FormField: _form_field_rule, FormDefinition: _form_rule, ContextKey: _context_key_rule, ConfigV1: _config_rule}

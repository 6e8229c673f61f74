from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.config import changed_paths, config_to_builtins, merge_patch, parse_config
from domain.errors import ValidationError

Json = Any
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- valid configs ----------------------------------------------------------------------

_PRINTABLE = st.characters(blacklist_categories=("Cc", "Cs"))


def line(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(_PRINTABLE, min_size=min_size, max_size=max_size)


def multiline(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.one_of(_PRINTABLE, st.just("\n")), min_size=min_size, max_size=max_size)


colors = st.from_regex(r"#[0-9a-fA-F]{6}", fullmatch=True)
slugs = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,39}", fullmatch=True)
locales = st.from_regex(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}", fullmatch=True).filter(lambda s: len(s) <= 35)
hosts = st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True), min_size=1, max_size=4).map(".".join)
paths = st.from_regex(r"(/[A-Za-z0-9._~%!$&()*+,;=:@-]{0,30}){0,4}(\?[A-Za-z0-9=&]{0,20})?", fullmatch=True)
urls = st.builds(lambda host, port, path: f"https://{host}{port}{path}", hosts, st.sampled_from(["", ":8443"]), paths)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


appearance = optional(
    theme=st.sampled_from(["light", "dark", "auto"]),
    primary_color=colors,
    accent_color=colors,
    position=st.sampled_from(["bottom-right", "bottom-left"]),
    launcher_label=line(0, 40),
    bubble_icon=st.sampled_from(["chat", "headset", "sparkle", "wave"]),
)
branding = optional(
    display_name=line(1, 60),
    avatar_url=st.none() | urls,
    logo_url=st.none() | urls,
    show_powered_by=st.booleans(),
)
text = optional(enabled=st.booleans(), welcome_message=multiline(0, 500), input_placeholder=line(0, 120))
voice = optional(enabled=st.booleans(), mode=st.sampled_from(["push_to_talk", "open_mic"]))
quick_actions = st.lists(st.fixed_dictionaries({"label": line(1, 40), "message": multiline(1, 500)}), max_size=8)
feedback = optional(
    enabled=st.booleans(),
    type=st.sampled_from(["thumbs", "stars", "scale_5"]),
    prompt=line(0, 200),
    allow_comment=st.booleans(),
)


@st.composite
def form_fields(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["text", "email", "phone", "textarea", "select", "checkbox"]))
    field = {"name": draw(slugs), "label": draw(line(1, 80)), "type": kind}
    field |= draw(optional(required=st.booleans()))
    if kind == "select":
        field["options"] = draw(st.lists(line(1, 80), min_size=1, max_size=50, unique=True))
    elif draw(st.booleans()):
        field["options"] = None
    return field


@st.composite
def forms(draw: st.DrawFn) -> list[dict[str, Any]]:
    result = []
    ids = draw(st.lists(slugs, max_size=10, unique=True))
    triggers = draw(st.lists(st.sampled_from(["pre_chat", "agent_request", None]), min_size=len(ids), max_size=len(ids)))
    pre_chat_seen = False
    for form_id, trigger in zip(ids, triggers):
        form = {"id": form_id, "title": draw(line(1, 80))}
        form["fields"] = draw(st.lists(form_fields(), min_size=1, max_size=20, unique_by=lambda f: f["name"]))
        if trigger == "pre_chat" and pre_chat_seen:
            trigger = "agent_request"
        pre_chat_seen = pre_chat_seen or trigger == "pre_chat"
        if trigger is not None:
            form["trigger"] = trigger
        result.append(form)
    return result


config_v1 = optional(
    appearance=appearance,
    branding=branding,
    text=text,
    voice=voice,
    quick_actions=quick_actions,
    forms=forms(),
    feedback=feedback,
    locale=st.none() | locales,
)
valid_configs = st.one_of(st.just({}), st.builds(lambda v1: {"v1": v1}, config_v1))


def contains(full: Json, part: Json) -> bool:
    """`part`, as given, is in `full`, the form with every default filled in."""
    if isinstance(part, dict):
        return isinstance(full, dict) and all(k in full and contains(full[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(full, list) and len(full) == len(part) and all(map(contains, full, part))
    return full == part


@SETTINGS
@given(valid_configs)
def test_a_valid_config_parses_and_round_trips_through_json(raw: dict[str, Any]) -> None:
    cfg = parse_config(raw)
    full = config_to_builtins(cfg)
    assert contains(full, raw)
    assert parse_config(msgspec.json.decode(msgspec.json.encode(full))) == cfg


# --- invalid mutations ------------------------------------------------------------------

Mutation = Callable[[st.DrawFn, dict[str, Any]], str]
_ENUMS = {
    ("appearance", "theme"): {"light", "dark", "auto"},
    ("appearance", "position"): {"bottom-right", "bottom-left"},
    ("appearance", "bubble_icon"): {"chat", "headset", "sparkle", "wave"},
    ("voice", "mode"): {"push_to_talk", "open_mic"},
    ("feedback", "type"): {"thumbs", "stars", "scale_5"},
    ("identity", "mode"): {"off", "optional", "required"},
}
_LINES = {("appearance", "launcher_label"): 40, ("branding", "display_name"): 60, ("text", "input_placeholder"): 120, ("feedback", "prompt"): 200}
_TEXTS = {("text", "welcome_message"): 500}
_BOOLS = [("branding", "show_powered_by"), ("text", "enabled"), ("voice", "enabled"), ("feedback", "enabled"), ("feedback", "allow_comment")]
_SECTIONS = ["appearance", "branding", "text", "voice", "feedback"]
_KNOWN = {"v1", "appearance", "branding", "text", "voice", "quick_actions", "forms", "feedback", "locale", "identity", "context"}
not_json_strings = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.lists(st.integers(), max_size=2)
not_bools = st.none() | st.integers() | st.text(max_size=5) | st.lists(st.booleans(), max_size=2)
control_chars = st.characters(whitelist_categories=("Cc",))


def section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    return cfg.setdefault("v1", {}).setdefault(name, {})


def bad_enum(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    (name, field), choices = draw(st.sampled_from(sorted(_ENUMS.items())))
    section(cfg, name)[field] = draw(st.text(max_size=12).filter(lambda s: s not in choices) | not_json_strings)
    return f"config.v1.{name}.{field}"


def bad_color(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    field = draw(st.sampled_from(["primary_color", "accent_color"]))
    bad = st.text(max_size=9).filter(lambda s: not re.fullmatch(r"#[0-9a-fA-F]{6}", s)) | colors.map(lambda c: c + "\n")
    section(cfg, "appearance")[field] = draw(bad | not_json_strings)
    return f"config.v1.appearance.{field}"


def bad_string(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    (name, field), limit = draw(st.sampled_from(sorted((_LINES | _TEXTS).items())))
    too_long = line(limit + 1, limit + 20)
    allowed = "\n" if (name, field) in _TEXTS else ""
    with_control = st.tuples(line(0, 5), control_chars.filter(lambda c: c not in allowed), line(0, 5)).map("".join)
    section(cfg, name)[field] = draw(too_long | with_control | not_json_strings)
    return f"config.v1.{name}.{field}"


def bad_bool(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    name, field = draw(st.sampled_from(_BOOLS))
    section(cfg, name)[field] = draw(not_bools)
    return f"config.v1.{name}.{field}"


def bad_url(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    field = draw(st.sampled_from(["avatar_url", "logo_url"]))
    schemes = st.sampled_from(["http", "ftp", "javascript", "HTTPS"])
    bad = st.tuples(schemes, urls).map(lambda su: su[1].replace("https", su[0], 1))
    section(cfg, "branding")[field] = draw(bad | urls.map(lambda u: u + " x") | line(0, 20) | st.integers())
    return f"config.v1.branding.{field}"


def bad_locale(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    pattern = r"[a-z]{2,3}(-[A-Za-z0-9]{2,8})*"
    bad = st.text(max_size=12).filter(lambda s: not re.fullmatch(pattern, s)) | locales.map(lambda s: s + "-" + "a" * 35)
    cfg.setdefault("v1", {})["locale"] = draw(bad | st.integers() | st.booleans())
    return "config.v1.locale"


def not_an_object(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    name = draw(st.sampled_from(_SECTIONS))
    cfg.setdefault("v1", {})[name] = draw(not_json_strings | st.text(max_size=3))
    return f"config.v1.{name}"


def unknown_key(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    where = draw(st.sampled_from(["", "v1", *_SECTIONS]))
    target = cfg if where == "" else cfg.setdefault("v1", {}) if where == "v1" else section(cfg, where)
    key = draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in _KNOWN and k not in target))
    target[key] = draw(st.integers())
    return {"": "config", "v1": "config.v1"}.get(where, f"config.v1.{where}") + f".{key}"


def bad_quick_action(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    actions = cfg.setdefault("v1", {}).setdefault("quick_actions", [])
    if draw(st.booleans()) or not actions:
        actions.extend(draw(quick_actions.filter(lambda a: len(a) + len(actions) > 8)))
        return "config.v1.quick_actions"
    i = draw(st.integers(0, len(actions) - 1))
    field, value = draw(st.sampled_from([("label", ""), ("label", "x" * 41), ("message", ""), ("message", None)]))
    actions[i][field] = value
    return f"config.v1.quick_actions[{i}].{field}"


def bad_form(draw: st.DrawFn, cfg: dict[str, Any]) -> str:
    all_forms = cfg.setdefault("v1", {}).setdefault("forms", [])
    if not all_forms:
        all_forms.extend(draw(forms().filter(bool)))
    i = draw(st.integers(0, len(all_forms) - 1))
    form = all_forms[i]
    j = draw(st.integers(0, len(form["fields"]) - 1))
    field = form["fields"][j]
    at = f"config.v1.forms[{i}]"
    match draw(st.sampled_from(["id", "title", "name", "type", "options", "duplicate"])):
        case "id":
            form["id"] = draw(st.text(max_size=41).filter(lambda s: not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", s)))
            return f"{at}.id"
        case "title":
            form["title"] = draw(st.just("") | line(81, 90))
            return f"{at}.title"
        case "name":
            field["name"] = draw(st.sampled_from(["", "Name", "-x", "a b", "x" * 41]))
            return f"{at}.fields[{j}].name"
        case "type":
            field["type"] = draw(st.sampled_from(["date", "SELECT", "", "radio"]) | st.integers())
            return f"{at}.fields[{j}].type"
        case "options":
            if field["type"] == "select":
                field.pop("options")
            else:
                field["options"] = ["a"]
            return f"{at}.fields[{j}].options"
        case _ if len(all_forms) < 10:
            all_forms.append(copy.deepcopy(form) | {"trigger": "agent_request"})
            return f"config.v1.forms[{len(all_forms) - 1}].id"
        case _:
            k = draw(st.integers(0, len(all_forms) - 1).filter(lambda k: k != i))
            all_forms[k]["id"] = form["id"]
            return f"config.v1.forms[{max(i, k)}].id"


MUTATIONS: list[Mutation] = [
    bad_enum, bad_color, bad_string, bad_bool, bad_url, bad_locale, not_an_object, unknown_key, bad_quick_action, bad_form,
]


@SETTINGS
@given(valid_configs, st.sampled_from(MUTATIONS), st.data())
def test_an_invalid_mutation_is_refused_naming_the_mutated_field(raw: dict[str, Any], mutate: Mutation, data: st.DataObject) -> None:
    mutated = copy.deepcopy(raw)
    path = mutate(data.draw, mutated)
    try:
        parse_config(mutated)
    except ValidationError as exc:
        fields = [e.field for e in exc.errors]
    else:
        raise AssertionError(f"{path} was accepted: {mutated!r}")
    assert path in fields
    assert all(f == path or f.startswith((path + ".", path + "[")) for f in fields), fields


# --- merge patch and arbitrary input ------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=5)


def without_nulls(value: Json) -> Json:
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


@SETTINGS
@given(json_objects)
def test_merge_patch_with_an_empty_patch_is_identity(target: dict[str, Any]) -> None:
    assert merge_patch(target, {}) == target


@SETTINGS
@given(json_objects.map(without_nulls))
def test_patching_an_object_with_itself_gives_it_back(target: dict[str, Any]) -> None:
    # A null in a patch means "remove", so the property holds for objects without nulls.
    before = copy.deepcopy(target)
    assert merge_patch(target, target) == target == before


@SETTINGS
@given(valid_configs)
def test_patching_a_config_with_itself_keeps_the_config(raw: dict[str, Any]) -> None:
    full = config_to_builtins(parse_config(raw))
    assert parse_config(merge_patch(full, full)) == parse_config(raw)


@st.composite
def json_inside_a_config(draw: st.DrawFn) -> Json:
    """A valid config with one node somewhere inside it replaced by arbitrary JSON."""
    raw: Json = {"v1": draw(config_v1)}
    node, key = raw, "v1"
    while isinstance(node[key], (dict, list)) and node[key] and draw(st.booleans()):
        node = node[key]
        key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
    node[key] = draw(json_values)
    return raw


@SETTINGS
@given(json_values | json_inside_a_config())
def test_arbitrary_json_raises_nothing_but_a_validation_error(raw: Json) -> None:
    try:
        parse_config(raw)
    except ValidationError as exc:
        assert exc.errors
        assert all(e.field == "config" or e.field.startswith(("config.", "config[")) for e in exc.errors)


@given(valid_configs, valid_configs)
def test_changed_paths_read_the_same_from_stored_builtins_as_from_configs(a: dict[str, Any], b: dict[str, Any]) -> None:
    old, new = parse_config(a), parse_config(b)
    from_configs = changed_paths(old, new)
    assert changed_paths(config_to_builtins(old), config_to_builtins(new)) == from_configs
    assert (from_configs == []) == (config_to_builtins(old) == config_to_builtins(new))

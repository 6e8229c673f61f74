from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from domain.config import (
    Feedback,
    FormDefinition,
    WidgetConfig,
    changed_paths,
    config_to_builtins,
    find_form,
    merge_patch,
    parse_config,
)
from domain.errors import FieldError, ValidationError
from domain.forms import validate_feedback, validate_form_values


def errors_of(raw: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        parse_config(raw)
    return {e.field: e.message for e in caught.value.errors}


def v1(**sections: Any) -> dict[str, Any]:
    return {"v1": sections}


def form(**overrides: Any) -> dict[str, Any]:
    return {"id": "contact", "title": "Contact", "fields": [{"name": "email", "label": "Email", "type": "email"}]} | overrides


# --- defaults -------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [{}, {"v1": {}}, {"v1": {"appearance": {}, "forms": []}}])
def test_empty_config_means_all_defaults(raw: object) -> None:
    cfg = parse_config(raw)
    assert cfg == WidgetConfig()
    assert cfg.v1.appearance.theme == "auto"
    assert cfg.v1.branding.display_name == "Assistant"
    assert cfg.v1.branding.show_powered_by is True
    assert cfg.v1.text.enabled and cfg.v1.voice.enabled
    assert cfg.v1.voice.mode == "push_to_talk"
    assert cfg.v1.feedback.enabled is False and cfg.v1.feedback.type == "thumbs"
    assert cfg.v1.locale is None
    assert cfg.v1.quick_actions == () and cfg.v1.forms == ()


def test_full_form_fills_in_every_default_and_is_json_ready() -> None:
    full = config_to_builtins(parse_config({}))
    assert set(full["v1"]) == {"appearance", "branding", "text", "voice", "quick_actions", "forms", "feedback", "locale", "identity",
                            "context"}
    assert full["v1"]["quick_actions"] == [] and full["v1"]["locale"] is None
    assert msgspec.json.decode(msgspec.json.encode(full)) == full


def test_a_rich_config_round_trips() -> None:
    raw = v1(
        appearance={"theme": "dark", "primary_color": "#00aaFF", "position": "bottom-left", "bubble_icon": "wave"},
        branding={"avatar_url": "https://cdn.example.com/a.png?x=1#y", "logo_url": "https://example.com:8443/logo.svg"},
        text={"welcome_message": "Hello!\nAsk me anything."},
        quick_actions=[{"label": "Pricing", "message": "What does it cost?"}],
        forms=[
            form(trigger="pre_chat"),
            form(id="callback", fields=[{"name": "when", "label": "When", "type": "select", "options": ["am", "pm"]}]),
        ],
        feedback={"enabled": True, "type": "stars"},
        locale="pt-BR",
    )
    cfg = parse_config(raw)
    assert cfg.v1.forms[1].fields[0].options == ("am", "pm")
    assert parse_config(config_to_builtins(cfg)) == cfg


# --- one invalid field, one exact path ------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        (v1(appearance={"primary_color": "red"}), "config.v1.appearance.primary_color", "must match #RRGGBB"),
        (v1(appearance={"accent_color": "#abcdef\n"}), "config.v1.appearance.accent_color", "must match #RRGGBB"),
        (v1(appearance={"theme": "blue"}), "config.v1.appearance.theme", "must be one of: light, dark, auto"),
        (v1(appearance={"theme": 1}), "config.v1.appearance.theme", "must be one of: light, dark, auto"),
        (v1(appearance={"launcher_label": "x" * 41}), "config.v1.appearance.launcher_label", "must be at most 40 characters"),
        (v1(appearance={"bubble_icon": "https://x.com/i.png"}), "config.v1.appearance.bubble_icon", None),
        (v1(branding={"display_name": ""}), "config.v1.branding.display_name", "must not be empty"),
        (v1(branding={"display_name": "a\x00b"}), "config.v1.branding.display_name", None),
        (v1(branding={"display_name": "two\nlines"}), "config.v1.branding.display_name", None),
        (v1(branding={"avatar_url": "http://example.com/a.png"}), "config.v1.branding.avatar_url", "must be an https URL"),
        (v1(branding={"logo_url": "javascript:alert(1)"}), "config.v1.branding.logo_url", "must be an https URL"),
        (v1(branding={"logo_url": "https://user@example.com/"}), "config.v1.branding.logo_url", "must be an https URL"),
        (v1(branding={"logo_url": "https://a.com/" + "x" * 2040}), "config.v1.branding.logo_url", None),
        (v1(branding={"show_powered_by": "yes"}), "config.v1.branding.show_powered_by", "must be a boolean"),
        (v1(text={"enabled": 1}), "config.v1.text.enabled", "must be a boolean"),
        (v1(text={"welcome_message": "x" * 501}), "config.v1.text.welcome_message", None),
        (v1(text={"welcome_message": "tab\there"}), "config.v1.text.welcome_message", None),
        (v1(text={"input_placeholder": ["a"]}), "config.v1.text.input_placeholder", "must be a string"),
        (v1(voice={"mode": "always"}), "config.v1.voice.mode", "must be one of: push_to_talk, open_mic"),
        (v1(voice="on"), "config.v1.voice", "must be an object"),
        (v1(quick_actions={}), "config.v1.quick_actions", "must be an array"),
        (v1(quick_actions=[{"label": "a", "message": "b"}] * 9), "config.v1.quick_actions", "must have at most 8 items"),
        (v1(quick_actions=[{"label": "a", "message": "b"}] * 2 + [{"label": "", "message": "b"}]), "config.v1.quick_actions[2].label", "must not be empty"),
        (v1(quick_actions=[{"label": "a"}]), "config.v1.quick_actions[0].message", "required"),
        (v1(quick_actions=[3]), "config.v1.quick_actions[0]", "must be an object"),
        (v1(forms=[form(id=f"f{i}") for i in range(11)]), "config.v1.forms", "must have at most 10 items"),
        (v1(forms=[form(id="Contact")]), "config.v1.forms[0].id", None),
        (v1(forms=[form(title="t" * 81)]), "config.v1.forms[0].title", "must be at most 80 characters"),
        (v1(forms=[form(trigger="on_load")]), "config.v1.forms[0].trigger", "must be one of: pre_chat, agent_request"),
        (v1(forms=[form(fields=[])]), "config.v1.forms[0].fields", "must have at least 1 item"),
        (v1(forms=[form(fields=[{"name": f"f{i}", "label": "L", "type": "text"} for i in range(21)])]), "config.v1.forms[0].fields", "must have at most 20 items"),
        (v1(forms=[form(fields=[{"name": "a", "label": "A", "type": "date"}])]), "config.v1.forms[0].fields[0].type", None),
        (v1(forms=[form(fields=[{"name": "a b", "label": "A", "type": "text"}])]), "config.v1.forms[0].fields[0].name", None),
        (v1(forms=[form(fields=[{"name": "a", "label": "A", "type": "text", "required": "no"}])]), "config.v1.forms[0].fields[0].required", "must be a boolean"),
        (v1(feedback={"type": "hearts"}), "config.v1.feedback.type", "must be one of: thumbs, stars, scale_5"),
        (v1(feedback={"prompt": "p" * 201}), "config.v1.feedback.prompt", "must be at most 200 characters"),
        (v1(feedback={"allow_comment": None}), "config.v1.feedback.allow_comment", "must be a boolean"),
        (v1(locale="english"), "config.v1.locale", None),
        (v1(locale="en-" + "-".join(["abcdefgh"] * 4)), "config.v1.locale", None),
        (v1(locale=5), "config.v1.locale", "must be a string or null"),
        ({"v1": []}, "config.v1", "must be an object"),
    ],
)
def test_an_invalid_field_is_named_by_its_exact_path(raw: object, path: str, message: str | None) -> None:
    errors = errors_of(raw)
    assert list(errors) == [path]
    if message is not None:
        assert errors[path] == message


@pytest.mark.parametrize("raw", [None, [], "config", 3, True])
def test_a_config_that_is_not_an_object_is_one_error_on_config(raw: object) -> None:
    assert errors_of(raw) == {"config": "must be an object"}


def test_select_fields_need_options_and_other_fields_refuse_them() -> None:
    fields = [
        {"name": "plan", "label": "Plan", "type": "select"},
        {"name": "note", "label": "Note", "type": "text", "options": ["a"]},
        {"name": "size", "label": "Size", "type": "select", "options": []},
        {"name": "tier", "label": "Tier", "type": "select", "options": ["a", "b", "a"]},
        {"name": "more", "label": "More", "type": "select", "options": ["ok", "x" * 81]},
    ]
    assert errors_of(v1(forms=[form(fields=fields)])) == {
        "config.v1.forms[0].fields[0].options": "required for select fields",
        "config.v1.forms[0].fields[1].options": "only allowed for select fields",
        "config.v1.forms[0].fields[2].options": "must have at least 1 item",
        "config.v1.forms[0].fields[3].options[2]": "duplicate option",
        "config.v1.forms[0].fields[4].options[1]": "must be at most 80 characters",
    }


def test_form_ids_and_field_names_must_be_unique_and_only_one_form_is_pre_chat() -> None:
    field = {"name": "email", "label": "Email", "type": "email"}
    raw = v1(forms=[form(trigger="pre_chat"), form(trigger="pre_chat"), form(id="b", fields=[field, field])])
    assert errors_of(raw) == {
        "config.v1.forms[1].id": "duplicate form id",
        "config.v1.forms[1].trigger": "only one pre_chat form is allowed",
        "config.v1.forms[2].fields[1].name": "duplicate field name",
    }


def test_cross_field_rules_are_reported_beside_other_errors_in_the_same_item() -> None:
    fields = [{"name": "a", "label": "", "type": "text"}, {"name": "a", "label": "A", "type": "select"}]
    assert errors_of(v1(forms=[form(title="", fields=fields)])) == {
        "config.v1.forms[0].title": "must not be empty",
        "config.v1.forms[0].fields[0].label": "must not be empty",
        "config.v1.forms[0].fields[1].options": "required for select fields",
        "config.v1.forms[0].fields[1].name": "duplicate field name",
    }


def test_every_invalid_field_is_listed_in_one_error() -> None:
    raw = v1(
        appearance={"primary_color": "blue", "theme": "neon"},
        branding={"logo_url": "ftp://example.com/x"},
        quick_actions=[{"label": "ok", "message": "ok"}, {"label": "x" * 41, "message": ""}],
        forms=[form(fields=[{"name": "a", "label": "A", "type": "text"}, {"name": "b", "label": "B", "type": "select"}])],
        feedback={"enabled": "true"},
        locale="EN",
    )
    assert set(errors_of(raw)) == {
        "config.v1.appearance.primary_color",
        "config.v1.appearance.theme",
        "config.v1.branding.logo_url",
        "config.v1.quick_actions[1].label",
        "config.v1.quick_actions[1].message",
        "config.v1.forms[0].fields[1].options",
        "config.v1.feedback.enabled",
        "config.v1.locale",
    }


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"v2": {}}, "config.v2"),
        (v1(bogus=1), "config.v1.bogus"),
        (v1(appearance={"bogus": True}), "config.v1.appearance.bogus"),
        (v1(quick_actions=[{"label": "a", "message": "b", "icon": "x"}]), "config.v1.quick_actions[0].icon"),
        (v1(forms=[form(fields=[{"name": "a", "label": "A", "type": "text", "hint": "h"}])]), "config.v1.forms[0].fields[0].hint"),
    ],
)
def test_unknown_fields_are_refused_wherever_they_are(raw: object, path: str) -> None:
    assert errors_of(raw) == {path: "unknown field"}


def test_the_error_is_a_validation_error_with_field_errors() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_config(v1(appearance={"primary_color": "red"}))
    assert caught.value.code == "invalid_request"
    assert caught.value.errors == [FieldError("config.v1.appearance.primary_color", "must match #RRGGBB")]


def test_find_form_by_id() -> None:
    cfg = parse_config(v1(forms=[form(), form(id="other", trigger="pre_chat")]))
    found = find_form(cfg, "other")
    assert isinstance(found, FormDefinition) and found.trigger == "pre_chat"
    assert find_form(cfg, "missing") is None


# --- merge patch (RFC 7396, Appendix A) -------------------------------------------------

RFC_7396_EXAMPLES = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7396_EXAMPLES)
def test_merge_patch_follows_rfc_7396_appendix_a(target: Any, patch: Any, result: Any) -> None:
    before = (copy.deepcopy(target), copy.deepcopy(patch))
    assert merge_patch(target, patch) == result
    assert (target, patch) == before


def test_merge_patch_never_mutates_what_it_is_given() -> None:
    target, patch = {"a": {"b": [1], "c": 2}, "k": [0]}, {"a": {"c": None, "d": {"e": 1}}, "k": None}
    assert merge_patch(target, patch) == {"a": {"b": [1], "d": {"e": 1}}}
    assert target == {"a": {"b": [1], "c": 2}, "k": [0]}
    assert patch == {"a": {"c": None, "d": {"e": 1}}, "k": None}


def test_merge_patch_handles_a_patch_nested_as_deep_as_json_decoding_allows() -> None:
    depth = 900
    patch = msgspec.json.decode(b'{"a":' * depth + b"null" + b"}" * depth)
    result = merge_patch({"a": 1}, patch)
    for _ in range(depth - 1):
        assert isinstance(result, dict)
        result = result["a"]
    assert result == {}


def test_a_patched_config_is_parsed_like_any_other() -> None:
    current = parse_config(v1(appearance={"theme": "dark"}, locale="fr"))
    patched = merge_patch(config_to_builtins(current), {"v1": {"appearance": {"primary_color": "#000000"}, "locale": None}})
    new = parse_config(patched)
    assert new.v1.appearance.theme == "dark" and new.v1.appearance.primary_color == "#000000"
    assert new.v1.locale is None


# --- changed paths ----------------------------------------------------------------------


def test_changed_paths_names_each_differing_leaf_sorted() -> None:
    old = parse_config({})
    new = parse_config(
        v1(appearance={"theme": "dark", "primary_color": "#000000"}, quick_actions=[{"label": "a", "message": "b"}], locale="de")
    )
    assert changed_paths(old, new) == [
        "v1.appearance.primary_color",
        "v1.appearance.theme",
        "v1.locale",
        "v1.quick_actions",
    ]


def test_changed_paths_compares_lists_as_whole_values() -> None:
    old = parse_config(v1(forms=[form()]))
    new = parse_config(v1(forms=[form(title="Reach us")]))
    assert changed_paths(old, new) == ["v1.forms"]
    assert changed_paths(old, old) == []


# --- form values ------------------------------------------------------------------------


def contact_form() -> FormDefinition:
    raw = form(
        fields=[
            {"name": "name", "label": "Name", "type": "text", "required": True},
            {"name": "email", "label": "Email", "type": "email", "required": True},
            {"name": "phone", "label": "Phone", "type": "phone"},
            {"name": "message", "label": "Message", "type": "textarea"},
            {"name": "plan", "label": "Plan", "type": "select", "options": ["free", "pro"]},
            {"name": "consent", "label": "I agree", "type": "checkbox", "required": True},
            {"name": "news", "label": "Newsletter", "type": "checkbox"},
        ]
    )
    return parse_config(v1(forms=[raw])).v1.forms[0]


def test_valid_form_values_are_returned_cleaned() -> None:
    values = {
        "name": "Ada",
        "email": "ada.lovelace+w@example.co.uk",
        "phone": "+44 (20) 7946-0958",
        "message": "line one\nline two",
        "plan": "pro",
        "consent": True,
    }
    assert validate_form_values(contact_form(), values) == values | {"news": False}


def test_optional_fields_left_blank_are_left_out() -> None:
    values = {"name": "Ada", "email": "ada@example.com", "phone": "", "plan": None, "consent": True}
    assert validate_form_values(contact_form(), values) == {"name": "Ada", "email": "ada@example.com", "consent": True, "news": False}


def test_every_bad_form_value_is_listed() -> None:
    values = {
        "name": "   ",
        "email": "ada@localhost",
        "phone": "call me",
        "message": "x" * 5001,
        "plan": "enterprise",
        "consent": False,
        "news": "yes",
        "extra": 1,
    }
    with pytest.raises(ValidationError) as caught:
        validate_form_values(contact_form(), values)
    assert {e.field: e.message for e in caught.value.errors} == {
        "values.extra": "unknown field",
        "values.name": "required",
        "values.email": "must be an email address such as name@example.com",
        "values.phone": "must be a phone number (digits, spaces, ( ) - . and an optional leading +)",
        "values.message": "must be at most 5000 characters",
        "values.plan": "must be one of: free, pro",
        "values.consent": "must be checked",
        "values.news": "must be true or false",
    }


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("name", "x" * 1001),
        ("name", "two\nlines"),
        ("name", 42),
        ("message", "nul\x00"),
        ("email", "no-at-sign.example.com"),
        ("email", "a@b@example.com"),
        ("email", "a b@example.com"),
        ("email", ".a@example.com"),
        ("email", "a@example"),
        ("email", "a@-example.com"),
        ("email", "x" * 65 + "@example.com"),
        ("phone", "12"),
        ("phone", "....."),
        ("phone", "+1 555 0100 ext 2"),
        ("plan", ["pro"]),
        ("consent", 1),
        ("consent", None),
    ],
)
def test_a_bad_form_value_is_refused_by_name(name: str, value: object) -> None:
    values: dict[str, object] = {"name": "Ada", "email": "ada@example.com", "consent": True, name: value}
    with pytest.raises(ValidationError) as caught:
        validate_form_values(contact_form(), values)
    assert [e.field for e in caught.value.errors] == [f"values.{name}"]


@pytest.mark.parametrize("values", [None, [], "name=Ada"])
def test_form_values_must_be_an_object(values: object) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_form_values(contact_form(), values)
    assert caught.value.errors == [FieldError("values", "must be an object")]


# --- feedback ---------------------------------------------------------------------------


def feedback(**settings: Any) -> Feedback:
    return parse_config(v1(feedback={"enabled": True} | settings)).v1.feedback


def feedback_errors(cfg: Feedback, rating: object, comment: object = None) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        validate_feedback(cfg, rating, comment)
    return {e.field: e.message for e in caught.value.errors}


def test_feedback_is_refused_when_not_enabled() -> None:
    assert feedback_errors(parse_config({}).v1.feedback, 1) == {"rating": "feedback is not enabled for this widget"}


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [("thumbs", [0, 1], [-1, 2, 5]), ("stars", [1, 3, 5], [0, 6]), ("scale_5", [1, 5], [0, 10])],
)
def test_ratings_follow_the_feedback_type(kind: str, good: list[int], bad: list[int]) -> None:
    cfg = feedback(type=kind)
    for rating in good:
        assert validate_feedback(cfg, rating, None) == (rating, None)
    for rating in bad:
        assert list(feedback_errors(cfg, rating)) == ["rating"]


@pytest.mark.parametrize("rating", [True, False, 1.0, "1", None, [1]])
def test_a_rating_must_be_a_true_integer(rating: object) -> None:
    assert list(feedback_errors(feedback(type="thumbs"), rating)) == ["rating"]


def test_comment_is_kept_when_allowed() -> None:
    assert validate_feedback(feedback(), 1, "Great,\nthanks") == (1, "Great,\nthanks")
    assert validate_feedback(feedback(), 1, "") == (1, None)


def test_comment_is_refused_when_not_allowed_too_long_or_not_text() -> None:
    assert feedback_errors(feedback(allow_comment=False), 1, "hi") == {"comment": "comments are not enabled for this widget"}
    assert feedback_errors(feedback(), 1, "x" * 2001) == {"comment": "must be at most 2000 characters"}
    assert feedback_errors(feedback(), 1, 7) == {"comment": "must be a string"}
    assert set(feedback_errors(feedback(type="stars"), 0, "bell\x07")) == {"rating", "comment"}

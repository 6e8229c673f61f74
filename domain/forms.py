"""Values a visitor submits: answers to a configured form, and feedback on a conversation.

Strings are kept as given (nothing is stripped). An optional field sent as null,
"" or only whitespace counts as not answered and is left out of the cleaned
values. A checkbox is always in them (absent means unchecked), and a required
checkbox must be checked (consent boxes are the usual case).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, cast

from domain.config import Feedback, FormDefinition, FormField
from domain.errors import FieldError, ValidationError

MAX_LENGTH = {"text": 1000, "textarea": 5000, "email": 254, "phone": 32, "select": 80}
MAX_COMMENT_LENGTH = 2000
_PHONE = re.compile(r"\+?[0-9 ()\-.]{5,32}")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\u00a1-\U0010ffff-]+"
_LABEL = r"[A-Za-z0-9\u00a1-\U0010ffff](?:[A-Za-z0-9\u00a1-\U0010ffff-]{0,61}[A-Za-z0-9\u00a1-\U0010ffff])?"
_TLD = r"(?:[A-Za-z\u00a1-\U0010ffff]{2,63}|xn--[A-Za-z0-9-]{1,59})"
_EMAIL = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?:{_LABEL}\.)+{_TLD}")
_RATINGS = {"thumbs": range(0, 2), "stars": range(1, 6), "scale_5": range(1, 6)}


def rating_scale(kind: str) -> range:
    """The ratings a feedback scale takes (thumbs 0-1, stars and scale_5 1-5)."""
    return _RATINGS[kind]


_RATING_MESSAGES = {
    "thumbs": "must be 0 (thumbs down) or 1 (thumbs up)",
    "stars": "must be an integer from 1 to 5",
    "scale_5": "must be an integer from 1 to 5",
}


def validate_form_values(form: FormDefinition, values: object) -> dict[str, Any]:
    """The cleaned answers to `form`; `ValidationError` lists every problem under `values.<name>`."""
    if not isinstance(values, dict):
        raise ValidationError([FieldError("values", "must be an object")])
    known = {field.name: field for field in form.fields}
    errors = [FieldError(f"values.{name}", "unknown field") for name in values if name not in known]
    cleaned: dict[str, Any] = {}
    for name, field in known.items():
        value = values.get(name)
        if _is_blank(value) and field.type != "checkbox":
            if field.required:
                errors.append(FieldError(f"values.{name}", "required"))
            continue
        problem = _problem(field, value)
        if problem:
            errors.append(FieldError(f"values.{name}", problem))
        else:
            cleaned[name] = bool(value) if field.type == "checkbox" else value
    if errors:
        raise ValidationError(errors, f"The answers to form {form.id} are not valid.")
    return cleaned


def validate_feedback(cfg: Feedback, rating: object, comment: object) -> tuple[int, str | None]:
    """The rating and comment, checked against the widget's feedback settings."""
    if not cfg.enabled:
        raise ValidationError([FieldError("rating", "feedback is not enabled for this widget")])
    errors = []
    if type(rating) is not int or rating not in _RATINGS[cfg.type]:
        errors.append(FieldError("rating", _RATING_MESSAGES[cfg.type]))
    if comment == "":
        comment = None
    if comment is not None:
        if not cfg.allow_comment:
            errors.append(FieldError("comment", "comments are not enabled for this widget"))
        elif problem := _text_problem(comment, MAX_COMMENT_LENGTH, multiline=True):
            errors.append(FieldError("comment", problem))
    if errors:
        raise ValidationError(errors, "The feedback is not valid.")
    return cast(int, rating), cast("str | None", comment)


def _is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _problem(field: FormField, value: object) -> str | None:
    if field.type == "checkbox":
        if value is None:
            return "must be checked" if field.required else None
        if not isinstance(value, bool):
            return "must be true or false"
        return "must be checked" if field.required and not value else None
    problem = _text_problem(value, MAX_LENGTH[field.type], multiline=field.type == "textarea")
    if problem or not isinstance(value, str):
        return problem
    if field.type == "email" and not _is_email(value):
        return "must be an email address such as name@example.com"
    if field.type == "phone" and not (_PHONE.fullmatch(value) and sum(c.isdigit() for c in value) >= 5):
        return "must be a phone number (digits, spaces, ( ) - . and an optional leading +)"
    if field.type == "select" and value not in (field.options or ()):
        return "must be one of: " + ", ".join(field.options or ())
    return None


def _text_problem(value: object, max_length: int, *, multiline: bool) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    allowed = "\n" if multiline else ""
    if any(unicodedata.category(c) == "Cc" and c not in allowed for c in value):
        return "must not contain control characters" + (" other than line breaks" if multiline else "")
    return None


def _is_email(value: str) -> bool:
    if any(c.isspace() or unicodedata.category(c) == "Cf" for c in value):
        return False
    match = _EMAIL.fullmatch(value)
    return match is not None and len(match["local"]) <= 64

"""Structured logs (structlog), one JSON object a line in production, with secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from contextvars import ContextVar
from typing import Any

import structlog

SECRET_KEYS = re.compile(r"(token|secret|password|authorization|cookie|api_key)", re.IGNORECASE)
JWT_LIKE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def add_request_id(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Every line logged while serving a request carries its id (set once per request, cheaply)."""
    current = request_id.get()
    if current is not None:
        event_dict.setdefault("request_id", current)
    return event_dict


_secret_keys: dict[str, bool] = {}  # key name -> whether it names a secret (log lines use a few dozen names)


def secret_key(key: str) -> bool:
    found = _secret_keys.get(key)
    if found is None:
        found = bool(SECRET_KEYS.search(key))
        if len(_secret_keys) < 1024:
            _secret_keys[key] = found
    return found


def redact(value: Any) -> Any:
    # Both patterns need a literal ("eyJ", "@"): a value with neither is left as it is without running them.
    if isinstance(value, str) and ("eyJ" in value or "@" in value):
        return URL_PASSWORD.sub(r"\1***@", JWT_LIKE.sub("[jwt]", value))
    return value


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """No secret or token ever reaches a log line, whatever a caller passed."""
    for key in list(event_dict):
        if secret_key(key):
            event_dict[key] = "[redacted]"
        else:
            event_dict[key] = redact(event_dict[key])
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_request_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )

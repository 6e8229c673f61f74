"""Every setting the service reads: `WIDGETS_*` environment variables, each with
its default (safe for the embedded mode) and its meaning, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# LiveKit's development server (`livekit-server --dev`) signs with this secret: anyone can, so it is refused
# unless the LiveKit server is on this machine.
LIVEKIT_DEVELOPMENT_SECRET = "secret"
POOLER_MODES = ("none", "transaction")
_SECRET_HINTS = {"auth_secret": "a long random value (`openssl rand -hex 32`)",
                 "data_key": "the base64 of 32 random bytes (`openssl rand -base64 32`)"}


def setting(default: Any, doc: str) -> Any:
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class Settings:
    database_url: str = setting("", "PostgreSQL URL (postgresql://user:pass@host:port/db) for the event store and admin read models; empty: SQLite under WIDGETS_DATA_DIR")
    database_schema: str = setting("public", "PostgreSQL schema that holds the tables")
    database_pooler: str = setting("none", "none, or transaction when WIDGETS_DATABASE_URL goes through a transaction-mode pooler (PgBouncer, RDS Proxy): no session state, no server-side prepared statements")
    database_listen_url: str = setting("", "Direct PostgreSQL URL for LISTEN/NOTIFY, required with WIDGETS_DATABASE_POOLER=transaction; empty: WIDGETS_DATABASE_URL")
    redis_url: str = setting("", "Redis URL for the public lookup, rate limits and cache invalidation; empty: in-process")
    redis_prefix: str = setting("widgets:", "Prefix of every Redis key, so that several deployments can share one Redis")
    data_dir: str = setting("./var", "Folder for the embedded SQLite files")
    auth_secret: str = setting("", "HS256 secret that signs admin tokens; required with WIDGETS_DATABASE_URL; embedded, when empty: a random one made on first start in WIDGETS_DATA_DIR")
    auth_max_ttl: int = setting(86400, "Longest lifetime (exp - iat, in seconds) of an admin token that is accepted; `widgets token --ttl` refuses more")
    data_key: str = setting("", "Deployment key (base64 of 32 bytes) that wraps every conversation's data key; required with WIDGETS_DATABASE_URL; embedded, when empty: a random one made on first start in WIDGETS_DATA_DIR")
    data_key_previous: str = setting("", "The deployment key before the last rotation, still accepted for reading while `widgets rotate-data-key` rewraps")
    webhook_allow_private: bool = setting(False, "Development only: allow http:// webhook URLs and loopback or private addresses")
    webhook_deliveries: bool = setting(True, "Whether the projection process sends webhook deliveries; false queues them only (for a staging copy restored from production, which must not call customers' systems)")
    webhook_retry_schedule: str = setting("5,300,1800,7200,18000,36000,36000", "Seconds between webhook delivery attempts, comma-separated; after the last, a delivery is failed")
    livekit_url: str = setting("ws://localhost:7880", "LiveKit server URL handed to browsers")
    livekit_api_key: str = setting("devkey", "LiveKit API key that signs participant tokens")
    livekit_api_secret: str = setting("secret", "LiveKit API secret that signs tokens and verifies webhooks")
    livekit_agent_name: str = setting("anyreach-agent", "Agent worker name dispatched into every conversation room")
    livekit_token_ttl: int = setting(600, "Lifetime of a participant token, in seconds")
    host: str = setting("127.0.0.1", "Address `widgets serve` binds")
    port: int = setting(8000, "Port `widgets serve` binds")
    workers: int = setting(1, "Server worker processes")
    shutdown_timeout: float = setting(20.0, "Seconds in-flight requests get to finish after SIGTERM before workers are stopped")
    public_base_url: str = setting("", "Public URL of this service (for the demo page and embed snippet); empty: http://HOST:PORT")
    projections: str = setting("auto", "Where projections run: inprocess, external (a `widgets project` process), or auto (inprocess when embedded)")
    public_cache_size: int = setting(10_000, "Entries in the in-process cache in front of the public read model")
    public_cache_ttl: float = setting(5.0, "Longest time, in seconds, a cached public entry is trusted without an invalidation message")
    public_max_age: int = setting(60, "Cache-Control max-age of public widget config responses, in seconds")
    trusted_proxies: str = setting("", "Comma-separated addresses or CIDRs of load balancers whose X-Forwarded-For names the client (for rate limits)")
    rate_config_reads: str = setting("600/minute", "Config reads allowed per client address")
    rate_conversation_starts: str = setting("20/minute", "Conversation starts allowed per client address and widget")
    rate_resumes: str = setting("10/minute", "Resumes allowed per client address and conversation")
    rate_submissions: str = setting("20/minute", "Form submissions and feedback allowed per client address and widget")
    form_submissions: int = setting(5, "Times one form may be submitted in one conversation (the latest submission is the one that counts)")
    redis_max_connections: int = setting(512, "Connections in each process's Redis pool")
    pg_pool_size: int = setting(10, "Connections in each process's PostgreSQL pool")
    startup_timeout: float = setting(30.0, "Seconds to wait for the stores at startup before giving up")
    metrics_port: int = setting(0, "Port where `widgets project` and `widgets rebuild` serve Prometheus metrics; 0: none (the API serves /metrics)")
    metrics_token: str = setting("", "Bearer token required to read the API's /metrics; empty: anyone who reaches it may read it")
    installations_flush_interval: float = setting(2.0, "Seconds between the hand-overs of each API process's config-read counts (installations, per-day loads) to Redis, or SQL when embedded")
    log_level: str = setting("info", "Log level: debug, info, warning, error")
    log_format: str = setting("auto", "Log format: json, console, or auto (console on a terminal)")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(env_name(f.name))
            if raw is None:
                continue
            kind = type(f.default)
            try:
                values[f.name] = _parse_bool(raw) if kind is bool else kind(raw) if kind is not str else raw
            except ValueError:
                raise SystemExit(f"{env_name(f.name)}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**values)

    def __post_init__(self) -> None:
        try:
            delays = self.webhook_retry_delays
        except ValueError:
            delays = (-1.0,)
        if not delays or any(not 0 <= d <= 30 * 86400 for d in delays):
            raise SystemExit(f"WIDGETS_WEBHOOK_RETRY_SCHEDULE={self.webhook_retry_schedule!r} must be seconds from 0 to 2592000, "
                             "comma-separated (the delay after each failed attempt)")
        if self.database_pooler not in POOLER_MODES:
            raise SystemExit(f"WIDGETS_DATABASE_POOLER={self.database_pooler!r} is not one of {', '.join(POOLER_MODES)}")
        if self.behind_pooler and not self.database_listen_url:
            raise SystemExit(
                "WIDGETS_DATABASE_POOLER=transaction needs WIDGETS_DATABASE_LISTEN_URL: a direct PostgreSQL URL "
                "(not through the pooler) for LISTEN/NOTIFY, which holds a session a transaction-mode pooler cannot give"
            )
        if self.auth_max_ttl <= 0:
            raise SystemExit(f"WIDGETS_AUTH_MAX_TTL={self.auth_max_ttl} must be a number of seconds above 0")
        if self.embedded:
            self._keep_embedded_secrets()

    def _keep_embedded_secrets(self) -> None:
        """Embedded, an empty secret is the data folder's own (made on first start), so that every process on the
        folder (the server's workers, `widgets token`) uses the same one; production names its own (`require`)."""
        from infrastructure import embedded_secrets as kept

        if not self.auth_secret:
            object.__setattr__(self, "auth_secret", kept.kept_auth_secret(self.data_path))
        if not self.data_key:
            object.__setattr__(self, "data_key", kept.kept_data_key(self.data_path))
            if not self.data_key_previous:  # a rotation of the folder's key, under way
                object.__setattr__(self, "data_key_previous", kept.kept_previous_data_key(self.data_path))

    def require(self, *names: str) -> None:
        """Stop, naming them, when secrets this process needs are not set (only production can lack them)."""
        missing = [f"{env_name(name)} is required with WIDGETS_DATABASE_URL: set it to {_SECRET_HINTS[name]}."
                   for name in names if not getattr(self, name)]
        if missing:
            raise SystemExit("\n".join(missing))

    def refuse_public_secrets(self) -> None:
        """Stop when a secret is missing or is one anyone can read in a published source (see docs/security.md)."""
        from infrastructure.embedded_secrets import LEGACY_AUTH_SECRET, LEGACY_DATA_KEY

        self.require("auth_secret", "data_key")
        if self.auth_secret == LEGACY_AUTH_SECRET:
            raise SystemExit("WIDGETS_AUTH_SECRET is the development secret of earlier versions, which anyone can read in "
                             "their source: set a long random value (`openssl rand -hex 32`).")
        if self.data_key == LEGACY_DATA_KEY and not self.embedded:
            raise SystemExit("WIDGETS_DATA_KEY is the development key of earlier versions, which anyone can read in their "
                             "source: set a new one, with this one as WIDGETS_DATA_KEY_PREVIOUS, and run `widgets "
                             "rotate-data-key` (README, \"Rotating the deployment key\").")
        if self.livekit_api_secret == LIVEKIT_DEVELOPMENT_SECRET and not is_loopback_url(self.livekit_url):
            raise SystemExit(f"WIDGETS_LIVEKIT_API_SECRET is LiveKit's development secret, which anyone can sign with, and "
                             f"WIDGETS_LIVEKIT_URL ({self.livekit_url}) is not on this machine: set the LiveKit server's own "
                             "API key and secret.")

    @property
    def uses_legacy_data_key(self) -> bool:
        """Whether data is wrapped with the development key of earlier versions (an embedded folder they made)."""
        from infrastructure.embedded_secrets import LEGACY_DATA_KEY

        return self.data_key == LEGACY_DATA_KEY

    @property
    def webhook_retry_delays(self) -> tuple[float, ...]:
        """The delays after the first, second, ... failed webhook attempt; after the last, the delivery is failed."""
        return tuple(float(part) for part in self.webhook_retry_schedule.split(","))

    @property
    def behind_pooler(self) -> bool:
        """Whether WIDGETS_DATABASE_URL goes through a transaction-mode pooler: no session state may be relied on."""
        return self.database_pooler == "transaction" and bool(self.database_url)

    @property
    def listen_url(self) -> str:
        """Where LISTEN/NOTIFY connects: the direct URL when one is given."""
        return self.database_listen_url or self.database_url

    @property
    def embedded(self) -> bool:
        return not self.database_url

    @property
    def projections_in_process(self) -> bool:
        if self.projections == "auto":
            return self.embedded or not self.redis_url
        return self.projections == "inprocess"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def base_url(self) -> str:
        return self.public_base_url.rstrip("/") or f"http://{self.host}:{self.port}"


def is_loopback_url(url: str) -> bool:
    """Whether the URL's host is this machine: `localhost` or a loopback address."""
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(raw)


def env_name(field_name: str) -> str:
    return f"WIDGETS_{field_name.upper()}"


def documented_settings() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, for the README and the deploy checks."""
    return [(env_name(f.name), str(f.default), f.metadata["doc"]) for f in fields(Settings)]

"""Settings from the environment: shared names plus one prefix per service."""

from __future__ import annotations

import os

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.common import OfficeHours

DEV_JWT_SECRET = "dev-only-secret-change-me-0123456789abcdef"


class ServiceSettings(BaseSettings):
    """Everything a service reads from its environment.

    Shared values use their plain names (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``) or
    the ``LIENTHONG_`` prefix; per-service values use the service's own prefix, e.g.
    ``INTAKE_HTTP_PORT``, and ``INTAKE_DATABASE_URL`` (the service's own role) wins over
    ``DATABASE_URL``. Build with ``ServiceSettings.for_service("intake")``.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "LIENTHONG_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres",
        validation_alias=AliasChoices("DATABASE_URL", "LIENTHONG_DATABASE_URL"),
    )
    topic_prefix: str = Field("", validation_alias=AliasChoices("LIENTHONG_TOPIC_PREFIX"))
    clock_file: str | None = Field(
        None,
        validation_alias=AliasChoices("LIENTHONG_CLOCK_FILE"),
        description="Time travel: a file holding seconds to add to the wall clock",
    )
    calendar_overrides: str | None = Field(
        None,
        validation_alias=AliasChoices("LIENTHONG_CALENDAR_OVERRIDES"),
        description="Extra days off / working days (YAML, each entry citing its source) "
        "layered over the shipped services/runtime/calendar_vn.yaml",
    )
    office_hours: OfficeHours | None = Field(
        None,
        validation_alias=AliasChoices("LIENTHONG_OFFICE_HOURS"),
        description='Default office hours and cut-off as JSON, e.g. {"periods": '
        '[["07:30","11:30"],["13:00","17:00"]], "cutoff": "15:00"}; unset: 08:00-12:00, '
        "13:00-17:00, cut-off 15:00. Provinces and procedures may still set their own",
    )
    log_level: str = Field("INFO", validation_alias=AliasChoices("LIENTHONG_LOG_LEVEL"))
    # Who may do what (services/runtime/auth.py). Without LIENTHONG_DEV_MODE=1 a service
    # refuses to start with the built-in JWT secret, and mints no tokens.
    dev_mode: bool = Field(False, validation_alias=AliasChoices("LIENTHONG_DEV_MODE"))
    jwt_secret: str = Field(
        DEV_JWT_SECRET,
        validation_alias=AliasChoices("LIENTHONG_JWT_SECRET"),
        description="HS256 secret for staff tokens; empty to accept only JWKS-verified tokens",
    )
    jwt_audience: str = Field("lienthong", validation_alias=AliasChoices("LIENTHONG_JWT_AUDIENCE"))
    jwt_issuer: str = Field("lienthong-dev", validation_alias=AliasChoices("LIENTHONG_JWT_ISSUER"))
    jwks_url: str | None = Field(None, validation_alias=AliasChoices("LIENTHONG_JWKS_URL"))
    jwks_file: str | None = Field(None, validation_alias=AliasChoices("LIENTHONG_JWKS_FILE"))
    jwt_max_lifetime_s: int = Field(
        12 * 3600,
        ge=60,
        validation_alias=AliasChoices("LIENTHONG_JWT_MAX_LIFETIME_S"),
        description="Longest a staff token may live (exp - iat); longer ones are refused. "
        "Development tokens are minted with this lifetime, or 12 h if shorter",
    )
    # Applicants' lookup codes (X-Lookup-Code): wrong or unknown guesses counted per dossier
    # and per client address over a sliding window, shared by replicas; over: 429.
    lookup_guesses_per_dossier: int = Field(
        10, ge=1, validation_alias=AliasChoices("LIENTHONG_LOOKUP_GUESSES_PER_DOSSIER")
    )
    lookup_guesses_per_client: int = Field(
        30, ge=1, validation_alias=AliasChoices("LIENTHONG_LOOKUP_GUESSES_PER_CLIENT")
    )
    lookup_guess_window_s: int = Field(
        900, ge=1, validation_alias=AliasChoices("LIENTHONG_LOOKUP_GUESS_WINDOW_S")
    )
    # The clients' own defaults, as a production cluster expects them: a member that stops
    # heartbeating leaves the group after 10 s; an idle fetch waits up to 500 ms but returns
    # as soon as data arrives.
    kafka_session_timeout_ms: int = Field(
        10000, validation_alias=AliasChoices("LIENTHONG_KAFKA_SESSION_TIMEOUT_MS")
    )
    kafka_heartbeat_interval_ms: int = Field(
        3000, validation_alias=AliasChoices("LIENTHONG_KAFKA_HEARTBEAT_INTERVAL_MS")
    )
    kafka_fetch_max_wait_ms: int = Field(
        500, validation_alias=AliasChoices("LIENTHONG_KAFKA_FETCH_MAX_WAIT_MS")
    )

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    db_schema: str = ""
    pool_min_size: int = 1
    pool_max_size: int = 10
    relay_batch_size: int = 500
    relay_poll_interval_s: float = 1.0
    timer_batch_size: int = 500
    timer_poll_interval_s: float = 0.5
    handler_max_attempts: int = 5
    max_body_bytes: int = 256 * 1024
    replica: str = "0"

    # notification
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_sender: str = "mot-cua@lienthong.local"
    smtp_timeout_s: float = 10.0
    # the sender loop: claim a batch with a lease, send outside transactions, mark each
    delivery_batch_size: int = 20
    delivery_lease_s: float = 30.0
    delivery_max_attempts: int = 8
    delivery_retry_base_s: float = 2.0
    delivery_retry_max_s: float = 600.0
    delivery_poll_interval_s: float = 0.5

    # the national portal (intake syncs dossiers to it; notification posts messages there):
    # INTAKE_PORTAL_URL, NOTIFICATION_PORTAL_URL... Empty URL: nothing is sent to it.
    portal_url: str = Field("", description="Base URL of the portal's service API")
    portal_username: str = ""
    portal_password: str = ""
    portal_unit: str = Field("", description="madonvi: the local system's unit code")
    portal_dstcode: str = Field("", description="The dstcode header OpenCPS sends")
    portal_timeout_s: float = 10.0
    portal_batch_size: int = Field(50, ge=1, le=500, description="Records per portal call")
    portal_retry_base_s: float = 2.0
    portal_retry_max_s: float = 600.0
    portal_reconcile_interval_s: float = Field(
        3600.0, description="How often the portal's copy is compared with ours (0: never)"
    )

    # notification: SMS through an HTTP gateway, delivery receipts by webhook
    sms_url: str = Field("", description="Base URL of the SMS gateway; empty: no SMS")
    sms_api_key: str = ""
    sms_webhook_secret: str = Field("", description="HMAC key of the gateway's receipts")
    sms_rate_per_second: float = Field(20.0, description="Messages a second to the gateway")
    sms_per_recipient_per_hour: int = Field(
        10, description="Messages a phone number may receive an hour (more wait)"
    )
    public_url: str = Field(
        "", description="How the gateway reaches this service's webhooks, e.g. https://…"
    )

    # consultation
    templates_dir: str | None = None
    demo_minutes: bool = False

    # routing
    apology_watch_working_hours: int = Field(
        16,
        ge=8,
        description="How long before the appointment routing checks whether the work left"
        " still fits (working hours); the latest moment for Form 04 is 8 hours before it",
    )

    # intake
    catalogue_dir: str | None = None
    portal_clients: str = Field("", description="id:secret or id:sha256:<hex>, comma-separated")
    portal_token_ttl_s: int = 900
    submit_rate_per_minute: int = Field(120, description="submissions per principal per minute")
    backdate_limit_hours: float = Field(72.0, description="how far a head may back-date receipt")
    lookup_seal_public_key: str = Field("", description="notification's X25519 key, base64")

    # console: where the other services answer /ready ("intake=http://…,routing=http://…")
    service_urls: str = Field("", description="name=url pairs, comma-separated")
    console_rebuild_schema: str = Field("console_rebuild", description="rebuild target")

    # notification
    lookup_seal_private_key: str = Field("", description="X25519 private key, base64")

    @classmethod
    def for_service(cls, service: str) -> ServiceSettings:
        settings = cls(_env_prefix=f"{service.upper()}_")
        # The service's own PostgreSQL role (services/runtime/db_roles.py), else the DSN
        # a deployment gives every service.
        own_dsn = os.environ.get(f"{service.upper()}_DATABASE_URL")
        if own_dsn:
            settings.database_url = own_dsn
        if not settings.db_schema:
            settings.db_schema = service
        return settings

    def group_id(self, service: str) -> str:
        """A service's consumer group; the topic prefix keeps test deployments apart."""
        return f"{self.topic_prefix}lienthong-{service}"

    def topic(self, base: str) -> str:
        return f"{self.topic_prefix}{base}"

"""Typed settings read from INTAKE_* environment variables and `.env` (documented in docs/settings.md)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-only-change-me"  # noqa: S105 - the known default that prod refuses
DEV_AMI_SECRET = "intake-dev-ami"  # noqa: S105 - matches asterisk/manager.conf for the local dev PBX
DEV_SEAT_SECRET = "intake-dev-sip"  # noqa: S105 - derives the dev PBX seat SIP passwords


class Settings(BaseSettings):
    """All runtime configuration of the intake service."""

    model_config = SettingsConfigDict(
        env_prefix="INTAKE_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    # --- runtime ---
    env: Literal["dev", "test", "prod"] = "dev"
    host: str = "127.0.0.1"
    port: int = 8000
    var_dir: Path = Path("var")
    log_level: str = "INFO"
    secret_key: SecretStr = SecretStr(DEV_SECRET)

    # --- storage and live events ---
    database_url: str = ""
    redis_url: str | None = None
    db_pool_size: int = 10
    media_dir: Path | None = None

    # --- HTTP limits ---
    max_body_bytes: int = 2_000_000

    # --- operator sessions ---
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    cookie_secure: bool = False

    # --- workflow hand-off ---
    workflow_backend: Literal["builtin", "http"] = "builtin"
    workflow_url: str | None = None
    workflow_api_key: SecretStr = SecretStr(DEV_SECRET)
    workflow_webhook_secret: SecretStr = SecretStr(DEV_SECRET)
    workflow_timeout_seconds: float = 10.0
    department_api_token: SecretStr = SecretStr(DEV_SECRET)
    workday_start_hour: int = 8
    workday_end_hour: int = 18

    # --- outbox ---
    outbox_poll_seconds: float = 1.0
    outbox_batch: int = 20
    outbox_lease_seconds: float = 60.0
    outbox_backoff_base_seconds: float = 1.0
    outbox_backoff_max_seconds: float = 300.0
    outbox_max_attempts: int = 200
    outbox_worker: bool = True

    # --- SMS ---
    sms_provider: Literal["file", "kannel", "aliyun", "tencent", "smpp"] = "file"
    sms_outbox_path: Path | None = None
    sms_signature: str = "示例城管"
    sms_templates_path: Path | None = None
    sms_timeout_seconds: float = Field(default=10.0, gt=0)
    sms_quiet_hours: str = "22:00-08:00"
    sms_quiet_hours_enabled: bool | None = None
    sms_timezone: str = "Asia/Shanghai"
    sms_rate_per_hour: int = Field(default=10, ge=1)
    sms_rate_per_day: int = Field(default=30, ge=1)
    sms_unknown_outcome_grace_seconds: float = Field(default=300.0, ge=0)
    sms_rating_window_days: int = Field(default=30, ge=1)
    sms_callback_token: SecretStr | None = None
    sms_public_base_url: str | None = None
    sms_kannel_url: str = "http://127.0.0.1:13013/cgi-bin/sendsms"
    sms_kannel_username: str = "intake"
    sms_kannel_password: SecretStr | None = None
    sms_kannel_sender: str | None = None
    sms_kannel_smsc: str | None = None
    sms_aliyun_endpoint: str = "https://dysmsapi.aliyuncs.com"
    sms_aliyun_access_key_id: str | None = None
    sms_aliyun_access_key_secret: SecretStr | None = None
    sms_aliyun_templates: dict[str, str] = {}
    sms_tencent_endpoint: str = "https://sms.tencentcloudapi.com"
    sms_tencent_region: str = "ap-guangzhou"
    sms_tencent_secret_id: str | None = None
    sms_tencent_secret_key: SecretStr | None = None
    sms_tencent_sdk_app_id: str | None = None
    sms_tencent_templates: dict[str, str] = {}
    sms_smpp_host: str | None = None
    sms_smpp_port: int = 2775
    sms_smpp_system_id: str | None = None
    sms_smpp_password: SecretStr | None = None
    sms_smpp_system_type: str = ""
    sms_smpp_source_addr: str | None = None
    sms_smpp_enquire_link_seconds: float = Field(default=30.0, gt=0)

    # --- hotline (AMI) ---
    ami_host: str | None = None
    ami_port: int = 5038
    ami_username: str = "intake"
    ami_secret: SecretStr = SecretStr(DEV_AMI_SECRET)
    ami_timeout_seconds: float = Field(default=5.0, gt=0)
    ami_ping_seconds: float = Field(default=5.0, gt=0)
    hotline_dids: str = "12319,12345"
    hotline_open_hours: str = "08:00-20:00"
    hotline_wrapup_seconds: int = Field(default=15, ge=0)
    hotline_queue_max_wait_seconds: int = Field(default=300, ge=30)
    hotline_service_level_seconds: int = Field(default=15, ge=1)
    hotline_sip_bind: str = "127.0.0.1:5060"
    hotline_seat_first: int = 8001
    hotline_seat_count: int = Field(default=20, ge=1, le=500)
    hotline_seat_secret: SecretStr = SecretStr(DEV_SEAT_SECRET)
    hotline_carrier_host: str = "127.0.0.2"
    hotline_carrier_port: int = 5062
    hotline_recordings_dir: Path | None = None
    hotline_pbx_dir: Path | None = None
    hotline_debian_mirror: str | None = None
    hotline_survey_enabled: bool = True
    hotline_survey_delay_minutes: int = Field(default=30, ge=0)
    hotline_survey_hours: str = "09:00-20:00"
    hotline_survey_max_attempts: int = Field(default=3, ge=1)
    hotline_survey_retry_minutes: int = Field(default=120, ge=1)
    hotline_survey_poll_seconds: float = Field(default=30.0, gt=0)

    # --- WeChat official account ---
    wechat_token: SecretStr | None = None
    wechat_app_id: str | None = None
    wechat_app_secret: SecretStr | None = None
    wechat_aes_key: SecretStr | None = None
    wechat_api_base_url: str = "https://api.weixin.qq.com/cgi-bin/"
    wechat_previous_aes_key: SecretStr | None = None
    wechat_accept_plaintext: bool = False
    wechat_account_name: str = "示例城管"
    wechat_hotline: str = "12319"
    wechat_max_body_bytes: int = 65_536
    wechat_max_clock_skew_seconds: int = 300
    wechat_reply_budget_seconds: float = Field(default=4.0, gt=0, le=4.5)
    wechat_conversation_timeout_minutes: int = 30
    wechat_max_photos: int = Field(default=9, ge=1, le=9)
    wechat_media_max_bytes: int = 10_000_000
    wechat_media_types: list[str] = [
        "image/jpeg", "image/png", "image/gif", "image/webp", "audio/amr", "audio/speex", "audio/ogg", "audio/mpeg",
    ]
    wechat_http_timeout_seconds: float = 10.0
    wechat_token_refresh_margin_seconds: int = 300
    wechat_templates: dict[str, dict[str, Any]] = {}
    wechat_kb_min_score: float = 12.0
    wechat_points_duplicate_report: int = 1
    wechat_bind_code_ttl_minutes: int = 10

    # --- knowledge base ---
    kb_taxonomy_file: Path | None = None
    kb_taxonomy_extra_file: Path | None = None

    # --- classifier ---
    classifier_review_threshold: float = Field(default=0.5, ge=0.0, le=1.0)

    # --- open intake API (Open311, 12345 transfer, alarms, webhooks) ---
    open311_jurisdiction_id: str | None = None
    open311_contact: str = "示例市城市管理监督指挥中心（12319）"
    open311_public_base_url: str | None = None
    open311_default_rate_per_minute: int = Field(default=60, ge=1)
    open311_default_quota_per_day: int = Field(default=5000, ge=1)
    open311_photo_max_bytes: int = Field(default=1_500_000, ge=1024)
    open311_photo_max_count: int = Field(default=3, ge=0, le=9)
    open311_photo_types: list[str] = ["image/jpeg", "image/png", "image/webp"]
    open311_bounds: str | None = None
    open311_classifier_timeout_seconds: float = Field(default=2.0, gt=0)
    open311_alarm_window_minutes: int = Field(default=120, ge=1)
    open311_webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    open311_webhook_max_attempts: int = Field(default=30, ge=1)
    open311_webhook_allow_private: bool = False
    open311_sweep_seconds: float = Field(default=30.0, ge=0)

    # --- phone numbers ---
    default_region: str = "CN"

    @field_validator("database_url")
    @classmethod
    def _normalise_db_url(cls, value: str) -> str:
        """Accept plain postgres/sqlite URLs and pick the async drivers the app uses."""
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("postgresql://"):
            return "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        return value

    @model_validator(mode="after")
    def _fill_paths_and_enforce_secrets(self) -> Settings:
        """Derive var/ paths and refuse default secrets outside dev and test."""
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / 'intake.db'}"
        if self.media_dir is None:
            self.media_dir = self.var_dir / "media"
        if self.sms_outbox_path is None:
            self.sms_outbox_path = self.var_dir / "sms-outbox.log"
        if self.env == "prod":
            for name in ("secret_key", "workflow_api_key", "workflow_webhook_secret", "department_api_token"):
                secret: SecretStr = getattr(self, name)
                if secret.get_secret_value() == DEV_SECRET or len(secret.get_secret_value()) < 16:
                    raise ValueError(
                        f"INTAKE_{name.upper()} must be set to a secret of 16+ characters when INTAKE_ENV=prod"
                    )
            if self.ami_host and self.ami_secret.get_secret_value() == DEV_AMI_SECRET:
                raise ValueError("INTAKE_AMI_SECRET must not be the development secret when INTAKE_ENV=prod")
        if self.workflow_backend == "http" and not self.workflow_url:
            raise ValueError("INTAKE_WORKFLOW_URL is required when INTAKE_WORKFLOW_BACKEND=http")
        return self

    @property
    def is_sqlite(self) -> bool:
        """Tell whether the configured database is SQLite."""
        return self.database_url.startswith("sqlite")

    @property
    def sync_database_url(self) -> str:
        """Return the URL with a synchronous driver, for tools that need one."""
        url = self.database_url
        if url.startswith("postgresql+asyncpg://"):
            return "postgresql+psycopg://" + url.removeprefix("postgresql+asyncpg://")
        if url.startswith("sqlite+aiosqlite:///"):
            return "sqlite:///" + url.removeprefix("sqlite+aiosqlite:///")
        return url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings once per process (the CLI and app factory pass it on explicitly)."""
    return Settings()

"""Configuration (SPEC 4): a TOML file overridden by `TENCENT2MQTT_<SECTION>__<KEY>` variables.

Precedence, lowest first: defaults < TOML file < `*_FILE` variables (Docker secrets) < variables.
Every model is frozen; secrets are `SecretStr` and print as `**********`.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bridge.errors import validation_problems

ENV_PREFIX = "TENCENT2MQTT_"
CONFIG_ENV = "TENCENT2MQTT_CONFIG"
SECRET_PLACEHOLDER = "**********"


class Section(BaseModel):
    """A frozen config section that refuses unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class MqttConfig(Section):
    """`[mqtt]`: the broker link."""

    url: str = "mqtt://localhost:1883"
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    base_topic: str = "tencent2mqtt"
    protocol: Literal[4, 5] = 5
    qos: Literal[0, 1, 2] = 1
    keepalive: PositiveInt = 30
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_insecure: bool = False
    clean_start: bool = True
    session_expiry: int = Field(default=0, ge=0)
    reconnect_max_delay: PositiveFloat = 30.0

    @field_validator("protocol", "qos", mode="before")
    @classmethod
    def _int_literal(cls, value: Any) -> Any:
        # Environment variables are strings; a Literal of ints would refuse "5".
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError("must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError("must name a host, e.g. mqtt://localhost:1883")
        _ = parts.port  # raises ValueError on a bad port
        return value

    @field_validator("base_topic")
    @classmethod
    def _check_base(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "+#\0")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError("must be a non-empty topic without wildcards or outer slashes")
        return value

    @property
    def host(self) -> str:
        """The broker host name."""
        return urlsplit(self.url).hostname or "localhost"

    @property
    def tls(self) -> bool:
        """Whether the link uses TLS."""
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def port(self) -> int:
        """The broker port, defaulting by scheme."""
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    def effective_client_id(self) -> str:
        """The configured client id, or one unique per host and base topic (stable across runs)."""
        if self.client_id:
            return self.client_id
        digest = hashlib.sha1(f"{socket.gethostname()}|{self.base_topic}".encode()).hexdigest()
        return f"tencent2mqtt-{digest[:10]}"


class RetryConfig(Section):
    """`[retry]`: how upstream calls are retried (SPEC 3.5)."""

    attempts: PositiveInt = 4
    initial_delay: PositiveFloat = 0.2
    max_delay: PositiveFloat = 5.0
    deadline: PositiveFloat = 30.0


class ChannelConfig(Section):
    """`[ivh.channel]`: the per-session command channel (SPEC 3.3)."""

    auto_connect: bool = True
    heartbeat_interval: PositiveFloat = 40.0
    url: str | None = None
    text_interval: PositiveFloat = 1.0
    reconnect_max_delay: PositiveFloat = 30.0
    queue_size: PositiveInt = 100


class IvhConfig(Section):
    """`[ivh]`: the Digital Human session manager."""

    enabled: bool = True
    base_url: str = "https://gw.tvs.qq.com"
    appkey: str | None = None
    access_token: SecretStr | None = None
    poll_interval: PositiveFloat = 5.0
    closed_retention: float = Field(default=300.0, ge=0)
    request_timeout: PositiveFloat = 10.0
    channel: ChannelConfig = ChannelConfig()

    @property
    def has_credentials(self) -> bool:
        """Whether both appkey and access token are set."""
        return bool(self.appkey) and bool(
            self.access_token and self.access_token.get_secret_value()
        )


class DeskConfig(Section):
    """`[desk]`: the Contact Center REST API."""

    enabled: bool = True
    base_url: str = "https://console.tim.qq.com"
    sdkappid: PositiveInt | None = None
    identifier: str | None = None
    secret_key: SecretStr | None = None
    usersig_ttl: PositiveInt = 86400
    poll_interval: PositiveFloat = 5.0
    watch: tuple[str, ...] = ()
    request_timeout: PositiveFloat = 10.0
    rate_limit: PositiveFloat = 20.0
    stream_idle_timeout: PositiveFloat = 60.0
    stream_queue_size: PositiveInt = 10000

    @property
    def has_credentials(self) -> bool:
        """Whether sdkappid, identifier and secret key are all set."""
        secret = self.secret_key.get_secret_value() if self.secret_key else ""
        return bool(self.sdkappid and self.identifier and secret)


class BridgeConfig(Section):
    """`[bridge]`: request handling limits."""

    max_payload: PositiveInt = 64 * 1024
    # ivh/send_audio carries a whole WAV: 16 MiB is 8.7 minutes as bytes, 6.5 as base64 JSON.
    max_audio_payload: PositiveInt = 16 * 1024 * 1024
    health_interval: PositiveFloat = 30.0
    dedup_window: float = Field(default=60.0, ge=0)
    shutdown_timeout: PositiveFloat = 10.0
    max_inflight: PositiveInt = 1000


class HttpConfig(Section):
    """`[http]`: the health and metrics endpoint."""

    listen: str = ""


class LogConfig(Section):
    """`[log]`: logging."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class HomeAssistantConfig(Section):
    """`[homeassistant]`: MQTT discovery (opt-in)."""

    enabled: bool = False
    prefix: str = "homeassistant"


class _EnvSource(EnvSettingsSource):
    """Variables, minus the `*_FILE` ones that `_file_secrets` reads."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        loaded = super()._load_env_vars()
        return {k: v for k, v in loaded.items() if not k.lower().endswith("_file")}


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
    )

    mqtt: MqttConfig = MqttConfig()
    ivh: IvhConfig = IvhConfig()
    desk: DeskConfig = DeskConfig()
    bridge: BridgeConfig = BridgeConfig()
    retry: RetryConfig = RetryConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Variables beat the file, which arrives as init kwargs.
        return (_EnvSource(settings_cls), init_settings)

    def secrets(self) -> list[str]:
        """Every configured secret value, for log redaction."""
        found = [self.mqtt.password, self.ivh.access_token, self.desk.secret_key]
        return [s.get_secret_value() for s in found if s and s.get_secret_value()]

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as JSON-ready data, every secret replaced."""
        return self.model_dump(mode="json")


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one line per problem, naming the key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(path: str | Path | None = None) -> Settings:
    """Load the TOML file (if any), apply `*_FILE` secrets and variables, validate."""
    path = path or os.environ.get(CONFIG_ENV) or None
    data = _read_toml(Path(path)) if path else {}
    _merge(data, _file_secrets(os.environ))
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError([f"config: file not found: {path}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"config: {path} is not valid TOML: {exc}"]) from exc


def _file_secrets(env: Mapping[str, str]) -> dict[str, Any]:
    """`TENCENT2MQTT_DESK__SECRET_KEY_FILE=/run/secrets/x` -> {"desk": {"secret_key": "..."}}."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        upper = name.upper()
        if not (upper.startswith(ENV_PREFIX) and upper.endswith("_FILE")) or upper == CONFIG_ENV:
            continue
        keys = upper[len(ENV_PREFIX) : -len("_FILE")].lower().split("__")
        try:
            secret = Path(value).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError([f"{'.'.join(keys)}: cannot read {name}: {exc.strerror}"]) from exc
        _merge(out, _nest(keys, secret))
    return out


def _nest(keys: list[str], value: Any) -> dict[str, Any]:
    node: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        node = {key: node}
    return node


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _problems(exc: ValidationError) -> list[str]:
    return validation_problems(exc, whole="config")


def config_warnings(settings: Settings) -> list[str]:
    """Values that are valid but outside what Tencent documents (SPEC 4)."""
    warnings = []
    heartbeat = settings.ivh.channel.heartbeat_interval
    if not 30 < heartbeat < 60:
        warnings.append(
            f"ivh.channel.heartbeat_interval = {heartbeat}: Tencent documents 30-60 s "
            "(PROTOCOL A.5); the channel may be dropped or the cloud may throttle"
        )
    for key, value in (
        ("ivh.poll_interval", settings.ivh.poll_interval),
        ("desk.poll_interval", settings.desk.poll_interval),
    ):
        if value < 1:
            warnings.append(f"{key} = {value}: below 1 s, expect rate limiting upstream")
    if settings.ivh.channel.text_interval < 1:
        warnings.append("ivh.channel.text_interval below 1 s: Tencent requires > 1 s (A.5)")
    return warnings

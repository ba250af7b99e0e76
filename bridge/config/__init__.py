"""Configuration (docs/configuration.md): a TOML file overridden by `TENCENT2MQTT_<SECTION>__<KEY>`
variables.

Precedence, lowest first: defaults < TOML file < `*_FILE` variables (Docker secrets) < variables.
Every model is frozen; secrets are `SecretStr` and print as `**********`. Every key is checked
when the config is read (files load, URLs have their scheme and a host, numbers are finite and in
range): what `check-config` accepts is what `run` can run (docs/configuration.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bridge.config import checks as config_checks
from bridge.config import tlsfiles
from bridge.config.env import CONFIG_ENV, ENV_PREFIX, env_problems, file_secrets, merge
from bridge.config.env import secret_file_path as _secret_file_path
from bridge.errors import validation_problems

__all__ = ["CONFIG_ENV", "ENV_PREFIX"]

SECRET_PLACEHOLDER = "**********"
WEEK = 7 * 86400.0
# Durations are bounded: sockets and timers refuse larger timeouts (OverflowError at run time).
Seconds = Annotated[float, Field(gt=0, le=WEEK)]
SecondsOrZero = Annotated[float, Field(ge=0, le=WEEK)]
_CALLBACK_PATH = re.compile(r"/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*")


class Section(BaseModel):
    """A frozen config section that refuses unknown keys and non-finite numbers."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class MqttConfig(Section):
    """`[mqtt]`: the broker link."""

    url: str = "mqtt://localhost:1883"  # user information moves to username/password
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    base_topic: str = "tencent2mqtt"
    protocol: Literal[4, 5] = 5
    qos: Literal[0, 1, 2] = 1
    keepalive: int = Field(default=30, gt=0, le=65535)  # MQTT: two bytes
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = Field(default=None, validate_default=True)
    tls_insecure: bool = False
    clean_start: bool = True
    session_expiry: int = Field(default=0, ge=0, le=2**32 - 1)  # MQTT 5: four bytes
    reconnect_max_delay: Seconds = 30.0
    # paho's hot paths done on its private state (bridge/mqtt/fastpath.py), used only with the
    # paho releases they were verified against; off: paho's own code (docs/performance.md).
    fast_path: bool = True

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_url(cls, data: Any) -> Any:
        """`mqtt://alice:pw@host` means username alice, password pw (docs/configuration.md,
        "Credentials in mqtt.url"): they move out of the URL, so it never shows them. When
        username or password is also set, the URL keeps them and `_check_url` refuses it."""
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        creds = config_checks.split_credentials(data["url"])
        if creds.username is None and creds.password is None:
            return data
        if data.get("username") is not None or data.get("password") is not None:
            return data
        return {**data, "url": creds.url, "username": creds.username, "password": creds.password}

    @field_validator("protocol", "qos", mode="before")
    @classmethod
    def _int_literal(cls, value: Any) -> Any:
        # Environment variables are strings; a Literal of ints would refuse "5".
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if "@" in urlsplit(value).netloc:  # left there by `_credentials_from_url`
            raise ValueError(
                "holds a user name or password, and mqtt.username or mqtt.password is set "
                "too: give the credentials in one place"
            )
        parts = config_checks.check_url(
            value, schemes=("mqtt", "mqtts", "tcp", "ssl"), example="mqtt://localhost:1883"
        )
        if parts.path not in ("", "/"):
            raise ValueError("must not have a path: mqtt://host:port (MQTT over TCP)")
        return value

    @field_validator("base_topic")
    @classmethod
    def _check_base(cls, value: str) -> str:
        return config_checks.check_topic_root(value)

    @field_validator("client_id", "username")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:
            raise ValueError("must not contain a NUL character (MQTT forbids it)")
        return value

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and value.get_secret_value() and not info.data.get("username"):
            # aiomqtt (paho) sends a password only with a user name: it would go unused.
            raise ValueError("is set without mqtt.username: MQTT sends a password only with one")
        return value

    @field_validator("tls_ca_file")
    @classmethod
    def _check_ca(cls, value: Path | None) -> Path | None:
        if value is not None:
            tlsfiles.check_ca(value)
        return value

    @field_validator("tls_cert_file")
    @classmethod
    def _check_cert(cls, value: Path | None) -> Path | None:
        if value is not None:
            tlsfiles.check_cert(value)
        return value

    @field_validator("tls_key_file")
    @classmethod
    def _check_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if "tls_cert_file" not in info.data:
            return value  # the certificate itself is wrong, and said so
        cert = info.data["tls_cert_file"]
        if cert is None and value is not None:
            raise ValueError("is set without mqtt.tls_cert_file, the certificate it belongs to")
        if cert is not None:
            tlsfiles.check_key_pair(cert, value)
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
    """`[retry]`: how upstream calls are retried (docs/reliability.md)."""

    attempts: PositiveInt = 4
    initial_delay: Seconds = 0.2
    max_delay: Seconds = 5.0
    deadline: Seconds = 30.0


class ChannelConfig(Section):
    """`[ivh.channel]`: the per-session command channel (docs/design.md)."""

    auto_connect: bool = True
    heartbeat_interval: Seconds = 40.0
    url: str | None = None
    text_interval: Seconds = 1.0
    reconnect_max_delay: Seconds = 30.0
    queue_size: PositiveInt = 100

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None:
            config_checks.check_url(
                value, schemes=("wss", "ws"), example="wss://gw.tvs.qq.com/v2/ws/ivh/interactive"
            )
        return value


class IvhConfig(Section):
    """`[ivh]`: the Digital Human session manager."""

    enabled: bool = True
    base_url: str = "https://gw.tvs.qq.com"
    appkey: str | None = None
    access_token: SecretStr | None = None
    poll_interval: Seconds = 5.0
    closed_retention: SecondsOrZero = 300.0
    request_timeout: Seconds = 10.0
    channel: ChannelConfig = ChannelConfig()

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        config_checks.check_url(value, schemes=("https", "http"), example="https://gw.tvs.qq.com")
        return value

    @property
    def has_credentials(self) -> bool:
        """Whether both appkey and access token are set."""
        return bool(self.appkey) and bool(
            self.access_token and self.access_token.get_secret_value()
        )

    @property
    def disabled_reason(self) -> str | None:
        """Why the service does not run (for users), or None when it runs."""
        if not self.enabled:
            return "ivh.enabled = false in the configuration"
        if not self.has_credentials:
            return "no credentials configured (set ivh.appkey and ivh.access_token)"
        return None


class DeskConfig(Section):
    """`[desk]`: the Contact Center REST API."""

    enabled: bool = True
    base_url: str = "https://console.tim.qq.com"
    sdkappid: PositiveInt | None = None
    identifier: str | None = None
    secret_key: SecretStr | None = None
    usersig_ttl: PositiveInt = 86400
    poll_interval: Seconds = 5.0
    watch: tuple[str, ...] = ()
    request_timeout: Seconds = 10.0
    rate_limit: PositiveFloat = 20.0
    stream_idle_timeout: Seconds = 60.0
    stream_queue_size: PositiveInt = 10000
    ended_retention: SecondsOrZero = 300.0
    # The path Tencent POSTs session events to (docs/desk.md): a secret, as its random part is all
    # that keeps others from posting events.
    callback: SecretStr = SecretStr("")

    @field_validator("callback")
    @classmethod
    def _check_callback(cls, value: SecretStr) -> SecretStr:
        path = value.get_secret_value()
        if path and not _CALLBACK_PATH.fullmatch(path):
            raise ValueError("must be a path like /desk/callback/<long random part>")
        if path in ("/healthz", "/readyz", "/metrics"):
            raise ValueError("must not be one of the endpoint's own paths")
        return value

    @property
    def callback_path(self) -> str:
        """The callback path, "" when unset."""
        return self.callback.get_secret_value()

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        example = "https://console.tim.qq.com"
        config_checks.check_url(value, schemes=("https", "http"), example=example)
        return value

    @field_validator("watch")
    @classmethod
    def _check_watch(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return config_checks.check_session_ids(value)

    @property
    def has_credentials(self) -> bool:
        """Whether sdkappid, identifier and secret key are all set."""
        secret = self.secret_key.get_secret_value() if self.secret_key else ""
        return bool(self.sdkappid and self.identifier and secret)

    @property
    def disabled_reason(self) -> str | None:
        """Why the service does not run (for users), or None when it runs."""
        if not self.enabled:
            return "desk.enabled = false in the configuration"
        if not self.has_credentials:
            return (
                "no credentials configured (set desk.sdkappid, desk.identifier and desk.secret_key)"
            )
        return None


class BridgeConfig(Section):
    """`[bridge]`: request handling limits."""

    max_payload: PositiveInt = 64 * 1024
    # ivh/send_audio carries a whole WAV: 16 MiB is 8.7 minutes as bytes, 6.5 as base64 JSON.
    max_audio_payload: PositiveInt = 16 * 1024 * 1024
    health_interval: Seconds = 30.0
    dedup_window: SecondsOrZero = 60.0
    shutdown_timeout: Seconds = 10.0
    max_inflight: PositiveInt = 1000
    # Tencent POSTs on aiohttp's pool and parser without its per-request objects
    # (bridge/tencent/fastpost.py), for verified aiohttp releases; off: aiohttp's own code.
    http_fast_path: bool = True


class ClusterConfig(Section):
    """`[cluster]`: several instances sharing one base topic (docs/scale-out.md)."""

    enabled: bool = False
    instance_id: str | None = None
    group: str | None = None
    settle: PositiveFloat = 2.0

    @field_validator("instance_id", "group")
    @classmethod
    def _check_level(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "/+#\0")):
            raise ValueError("must be a non-empty topic level without '/', '+' or '#'")
        return value


class HttpConfig(Section):
    """`[http]`: the health and metrics endpoint."""

    listen: str = ""

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value:
            config_checks.parse_listen(value)
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to serve on, or None for no endpoint."""
        return config_checks.parse_listen(self.listen) if self.listen else None


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

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return config_checks.check_topic_root(value)


class _EnvSource(EnvSettingsSource):
    """Variables, minus the secrets' `*_FILE` forms that `file_secrets` reads."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        loaded = super()._load_env_vars()
        return {k: v for k, v in loaded.items() if _secret_file_path(k, Settings) is None}


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
    cluster: ClusterConfig = ClusterConfig()
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
        found = [
            self.mqtt.password,
            self.ivh.access_token,
            self.desk.secret_key,
            self.desk.callback,
        ]
        return [s.get_secret_value() for s in found if s and s.get_secret_value()]

    def instance_id(self) -> str:
        """This instance's name in the cluster: `cluster.instance_id`, else the client id."""
        return self.cluster.instance_id or self.mqtt.effective_client_id()

    def cluster_group(self) -> str:
        """The shared-subscription group: `cluster.group`, else the base topic."""
        return self.cluster.group or self.mqtt.base_topic

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
    secrets, problems = file_secrets(os.environ, Settings)
    problems += env_problems(os.environ, Settings)
    if problems:
        raise ConfigError(problems)
    merge(data, secrets)
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


def _problems(exc: ValidationError) -> list[str]:
    lines = validation_problems(exc, whole="config")
    return [line.replace(": Extra inputs are not permitted", ": unknown key") for line in lines]


def config_warnings(settings: Settings) -> list[str]:
    """Values that are valid but outside what Tencent documents (docs/configuration.md)."""
    warnings = []
    heartbeat = settings.ivh.channel.heartbeat_interval
    if not 30 < heartbeat < 60:
        warnings.append(
            f"ivh.channel.heartbeat_interval = {heartbeat}: Tencent documents 30-60 s "
            "for command-channel heartbeats; the channel may be dropped or the cloud may throttle"
        )
    for key, value in (
        ("ivh.poll_interval", settings.ivh.poll_interval),
        ("desk.poll_interval", settings.desk.poll_interval),
    ):
        if value < 1:
            warnings.append(f"{key} = {value}: below 1 s, expect rate limiting upstream")
    if settings.desk.callback_path and not settings.http.listen:
        warnings.append(
            "desk.callback is set but http.listen is not: nothing receives Tencent's session "
            "events (set http.listen and expose the path through a TLS reverse proxy)"
        )
    if settings.ivh.channel.text_interval < 1:
        warnings.append(
            "ivh.channel.text_interval below 1 s: Tencent requires more than 1 s between texts"
        )
    if not settings.mqtt.tls and any(
        (settings.mqtt.tls_ca_file, settings.mqtt.tls_cert_file, settings.mqtt.tls_key_file)
    ):
        warnings.append("mqtt.tls_* files are set but mqtt.url is not mqtts://: TLS is off")
    return warnings

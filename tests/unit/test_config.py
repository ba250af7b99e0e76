"""Configuration: the example file, variables over the file, errors naming keys, secrets."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from bridge.config import ConfigError, Settings, config_warnings, load_settings

EXAMPLE = Path(__file__).parents[2] / "config" / "tencent2mqtt.example.toml"


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys |= _keys(ann, f"{prefix}{name}.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def test_example_loads_and_equals_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(EXAMPLE)
    assert settings == Settings()


def test_example_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    documented = set()
    section = ""
    for line in text.splitlines():
        if m := re.match(r"^\[([\w.]+)\]", line):
            section = m.group(1) + "."
        elif m := re.match(r"^#?\s*(\w+)\s*=", line):
            documented.add(section + m.group(1))
    missing = _keys(Settings) - documented
    assert not missing, f"undocumented keys: {sorted(missing)}"
    tomllib.loads(text)


def test_variables_override_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[mqtt]\nurl = "mqtt://a:1"\nqos = 0\n[ivh.channel]\nauto_connect = true\n')
    monkeypatch.setenv("TENCENT2MQTT_MQTT__URL", "mqtts://b:8883")
    monkeypatch.setenv("TENCENT2MQTT_IVH__CHANNEL__AUTO_CONNECT", "false")
    monkeypatch.setenv("TENCENT2MQTT_DESK__WATCH", '["s1","s2"]')
    s = load_settings(conf)
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.tls, s.mqtt.qos) == ("b", 8883, True, 0)
    assert s.ivh.channel.auto_connect is False
    assert s.desk.watch == ("s1", "s2")


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[mqtt]\nbase_topic = "kiosk"\n')
    monkeypatch.setenv("TENCENT2MQTT_CONFIG", str(conf))
    assert load_settings().mqtt.base_topic == "kiosk"


def test_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "tok").write_text("file-token\n")
    monkeypatch.setenv("TENCENT2MQTT_IVH__ACCESS_TOKEN_FILE", str(tmp_path / "tok"))
    s = load_settings()
    assert s.ivh.access_token is not None
    assert s.ivh.access_token.get_secret_value() == "file-token"
    assert "file-token" not in repr(s) and "file-token" not in str(s.redacted())


def test_unreadable_secret_file_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENCENT2MQTT_DESK__SECRET_KEY_FILE", "/nonexistent/x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.problems[0].startswith("desk.secret_key:")


def test_every_problem_is_one_line_naming_its_key(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(
        '[mqtt]\nurl = "ftp://x"\nprotocol = 3\nbase_topic = "a/#"\n[desk]\nrate_limit = -1\n'
        "[ivh.channel]\nheartbeat_interval = 0\n[nonsense]\nx = 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(conf)
    keys = {line.split(":")[0] for line in info.value.problems}
    assert keys == {
        "mqtt.url",
        "mqtt.protocol",
        "mqtt.base_topic",
        "desk.rate_limit",
        "ivh.channel.heartbeat_interval",
        "nonsense",
    }
    assert all("\n" not in line for line in info.value.problems)


def test_bad_toml_is_one_clear_line(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("[mqtt\n")
    with pytest.raises(ConfigError) as info:
        load_settings(conf)
    assert "not valid TOML" in info.value.problems[0]


def test_short_intervals_warn_but_load() -> None:
    s = Settings(ivh={"poll_interval": 0.5, "channel": {"heartbeat_interval": 1}})
    warnings = config_warnings(s)
    assert any("heartbeat_interval" in w for w in warnings)
    assert any("ivh.poll_interval" in w for w in warnings)


def test_client_id_default_is_stable_and_depends_on_base() -> None:
    a = Settings(mqtt={"base_topic": "a"}).mqtt
    b = Settings(mqtt={"base_topic": "b"}).mqtt
    assert a.effective_client_id() == a.effective_client_id()
    assert a.effective_client_id() != b.effective_client_id()


def test_credentials_decide_services() -> None:
    s = Settings(ivh={"appkey": "k"}, desk={"sdkappid": 1, "identifier": "a", "secret_key": "s"})
    assert not s.ivh.has_credentials
    assert s.desk.has_credentials


def test_protocol_and_qos_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENCENT2MQTT_MQTT__PROTOCOL", "4")
    monkeypatch.setenv("TENCENT2MQTT_MQTT__QOS", "0")
    settings = load_settings(None)
    assert settings.mqtt.protocol == 4 and settings.mqtt.qos == 0


# -- issue 17: every key checked at load, one line naming it ---------------------------------


def _problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(f"TENCENT2MQTT_{name}", value)
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    assert all("\n" not in line for line in info.value.problems)
    return info.value.problems


@pytest.mark.parametrize("key", ["TLS_CA_FILE", "TLS_CERT_FILE", "TLS_KEY_FILE"])
def test_tls_file_keys_are_keys_in_the_environment(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 2: `_FILE` is the file form of secret keys only; `mqtt.tls_ca_file` is a key."""
    monkeypatch.setenv(f"TENCENT2MQTT_MQTT__{key}", str(tmp_path / "missing.pem"))
    expected = f"file not found: {tmp_path / 'missing.pem'}"
    if key == "TLS_KEY_FILE":
        expected = "is set without mqtt.tls_cert_file, the certificate it belongs to"
    assert _problems(monkeypatch) == [f"mqtt.{key.lower()}: {expected}"]


def test_only_secret_keys_have_a_file_form(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("pw-from-file\n")
    monkeypatch.setenv("TENCENT2MQTT_MQTT__USERNAME", "alice")
    monkeypatch.setenv("TENCENT2MQTT_MQTT__PASSWORD_FILE", str(tmp_path / "pw"))
    assert load_settings(None).secrets() == ["pw-from-file"]
    monkeypatch.setenv("TENCENT2MQTT_MQTT__BASE_TOPIC_FILE", str(tmp_path / "pw"))
    assert _problems(monkeypatch) == [
        "mqtt.base_topic_file: unknown key (from TENCENT2MQTT_MQTT__BASE_TOPIC_FILE)"
    ]


@pytest.mark.parametrize(
    ("name", "key"),
    [("DESK__WATCH", "desk.watch"), ("MQTT", "mqtt"), ("IVH__CHANNEL", "ivh.channel")],
)
def test_values_that_must_be_json_say_so(
    name: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 6: one line naming the key, not a SettingsError traceback."""
    problems = _problems(monkeypatch, **{name: "abc"})
    assert len(problems) == 1
    assert problems[0].startswith(f"{key}: TENCENT2MQTT_{name} must be JSON, e.g. ")


def test_unknown_sections_and_keys_in_the_environment_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defect 6: an unknown section was ignored while unknown keys were refused."""
    assert _problems(monkeypatch, FOO__BAR="1") == [
        "foo: unknown section (from TENCENT2MQTT_FOO__BAR)"
    ]
    monkeypatch.delenv("TENCENT2MQTT_FOO__BAR")
    assert _problems(monkeypatch, MQTT__NOPE="1") == [
        "mqtt.nope: unknown key (from TENCENT2MQTT_MQTT__NOPE)"
    ]


@pytest.mark.parametrize("bad", ["a/b", "#", "+", "", "-x", "x" * 129, "a b"])
def test_watch_takes_session_ids_only(bad: str) -> None:
    """Defect 7: a watched id becomes a topic and an API call (docs/topics.md's rule)."""
    with pytest.raises(ConfigError) as info:
        load_settings_from({"desk": {"watch": ["ok-1", bad]}})
    assert info.value.problems[0].startswith("desk.watch: item 2 (")
    assert load_settings_from({"desk": {"watch": ["s1", "a.b:c@d-e_f"]}}).desk.watch


@pytest.mark.parametrize(
    ("section", "key", "bad"),
    [
        ("ivh", "base_url", "notaurl"),
        ("ivh", "base_url", "ftp://gw.tvs.qq.com"),
        ("ivh", "base_url", "https://"),
        ("ivh", "base_url", "https://u:p@gw.tvs.qq.com"),
        ("desk", "base_url", "console.tim.qq.com"),
        ("desk", "base_url", "https://console.tim.qq.com:0"),
        ("desk", "base_url", "https://host:99999"),
        ("mqtt", "url", "http://localhost:1883"),
        ("mqtt", "url", "mqtt://"),
        ("mqtt", "url", "mqtt://host/path"),
        ("mqtt", "url", "mqtt://ho st"),
    ],
)
def test_url_keys_need_their_scheme_and_a_host(section: str, key: str, bad: str) -> None:
    """Defect 12: the right scheme and a host for every URL key."""
    with pytest.raises(ConfigError) as info:
        load_settings_from({section: {key: bad}})
    assert [line.split(":")[0] for line in info.value.problems] == [f"{section}.{key}"]
    assert "u:p" not in info.value.problems[0]


@pytest.mark.parametrize("bad", ["http://gw.tvs.qq.com/ws", "notaurl", "wss://"])
def test_channel_url_is_a_websocket_url(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings_from({"ivh": {"channel": {"url": bad}}})
    assert info.value.problems[0].startswith("ivh.channel.url: ")
    assert load_settings_from({"ivh": {"channel": {"url": "ws://127.0.0.1:1/x"}}})


@pytest.mark.parametrize(
    "bad", ["nonsense", "127.0.0.1:99999", "127.0.0.1:0", "host:port", ":", "[::1:9100", "a b:1"]
)
def test_http_listen_is_host_and_port(bad: str) -> None:
    """Defect 5: a listen address `run` cannot bind is refused by the config."""
    with pytest.raises(ConfigError) as info:
        load_settings_from({"http": {"listen": bad}})
    assert [line.split(":")[0] for line in info.value.problems] == ["http.listen"]


@pytest.mark.parametrize(
    ("listen", "address"),
    [(":9100", ("127.0.0.1", 9100)), ("[::1]:1", ("::1", 1)), ("0.0.0.0:80", ("0.0.0.0", 80))],
)
def test_http_listen_forms(listen: str, address: tuple[str, int]) -> None:
    assert load_settings_from({"http": {"listen": listen}}).http.address == address


def test_credentials_in_the_mqtt_url_are_used_and_leave_it() -> None:
    """Defect 3: `mqtt://alice:s3cr3tpw@host` means that user and password, redacted."""
    s = load_settings_from({"mqtt": {"url": "mqtt://alice:s3%40cr3tpw@host:1884"}})
    assert (s.mqtt.url, s.mqtt.username, s.mqtt.host, s.mqtt.port) == (
        "mqtt://host:1884",
        "alice",
        "host",
        1884,
    )
    assert s.mqtt.password is not None and s.mqtt.password.get_secret_value() == "s3@cr3tpw"
    assert s.secrets() == ["s3@cr3tpw"]
    assert "s3" not in str(s.redacted()) and "s3" not in repr(s)


def test_credentials_given_twice_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings_from({"mqtt": {"url": "mqtt://alice:s3cr3tpw@host", "username": "bob"}})
    assert info.value.problems[0].startswith("mqtt.url: holds a user name or password")
    assert "s3cr3tpw" not in info.value.problems[0]
    with pytest.raises(ConfigError) as info:
        load_settings_from({"mqtt": {"password": "pw-alone"}})
    assert info.value.problems[0].startswith("mqtt.password: is set without mqtt.username")


@pytest.mark.parametrize(
    ("section", "key", "bad"),
    [
        ("ivh", "poll_interval", "inf"),
        ("ivh", "poll_interval", "nan"),
        ("ivh", "request_timeout", 1e300),
        ("mqtt", "keepalive", 65536),
        ("mqtt", "session_expiry", 2**32),
        ("bridge", "dedup_window", -1),
    ],
)
def test_numbers_are_finite_and_in_range(section: str, key: str, bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings_from({section: {key: bad}})
    assert [line.split(":")[0] for line in info.value.problems] == [f"{section}.{key}"]


def test_homeassistant_prefix_is_a_topic() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings_from({"homeassistant": {"prefix": "home/#"}})
    assert info.value.problems[0].startswith("homeassistant.prefix: ")


def test_disabled_services_say_why() -> None:
    """Defect 14: "disabled by configuration" is not "no credentials"."""
    s = Settings(ivh={"enabled": False})
    assert s.ivh.disabled_reason == "ivh.enabled = false in the configuration"
    assert s.desk.disabled_reason is not None and "no credentials" in s.desk.disabled_reason


def load_settings_from(data: dict[str, object]) -> Settings:
    """`load_settings` on a TOML file holding `data` (the path `run` and `check-config` take)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.toml"
        path.write_text(_toml(data))
        return load_settings(path)


def _toml(data: dict[str, object], prefix: str = "") -> str:
    import json

    out = f"[{prefix}]\n" if prefix else ""
    tables = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, float) and value != value:
            out += f"{key} = nan\n"
        elif value in ("inf", "nan"):
            out += f"{key} = {value}\n"
        else:
            out += f"{key} = {json.dumps(value)}\n"
    for key, value in tables:
        out += _toml(value, f"{prefix}.{key}" if prefix else key)
    return out


def test_cluster_defaults_follow_the_mqtt_section() -> None:
    alone = Settings(mqtt={"client_id": "kiosk-7", "base_topic": "fleet"})
    assert not alone.cluster.enabled and alone.cluster.settle == 2.0
    assert alone.instance_id() == "kiosk-7" and alone.cluster_group() == "fleet"
    named = Settings(cluster={"enabled": True, "instance_id": "b1", "group": "g"})
    assert named.instance_id() == "b1" and named.cluster_group() == "g"
    assert named.redacted()["cluster"] == {
        "enabled": True,
        "instance_id": "b1",
        "group": "g",
        "settle": 2.0,
    }


def test_a_bad_instance_id_or_settle_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[cluster]\ninstance_id = "a/b"\nsettle = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    problems = caught.value.problems
    assert any(p.startswith("cluster.instance_id") for p in problems), problems
    assert any(p.startswith("cluster.settle") for p in problems), problems

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

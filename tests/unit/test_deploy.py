"""docker-compose.yml and its files: consistent with each other and with the command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.emulator.cli import emulator_command
from bridge.emulator.wire import CHANNEL_PATH

ROOT = Path(__file__).parents[2]
COMPOSE = (ROOT / "docker-compose.yml").read_text()


def env_file(name: str) -> dict[str, str]:
    out = {}
    for line in (ROOT / "docker" / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def service(name: str) -> str:
    """The block of one service (the text up to the next top-level service)."""
    match = re.search(rf"^  {name}:\n((?:    .*\n|\n)*)", COMPOSE, re.MULTILINE)
    assert match, name
    return match.group(1)


def emulator_args() -> list[str]:
    block = service("emulator").split("command:\n", 1)[1]
    args = []
    for line in block.splitlines():
        item = re.fullmatch(r"      - (\S+)", line)
        if item is None:
            break
        args.append(item.group(1))
    return args


def test_compose_is_plain_block_yaml() -> None:
    assert "\t" not in COMPOSE
    for line in COMPOSE.splitlines():
        indent = len(line) - len(line.lstrip(" "))
        assert indent % 2 == 0, line
    assert {"mosquitto", "bridge", "emulator"} <= set(re.findall(r"^  (\w+):$", COMPOSE, re.M))
    assert 'profiles: ["emulator"]' in service("emulator")
    assert "image: eclipse-mosquitto:2" in service("mosquitto")
    assert "build: ." in service("bridge")


def test_referenced_files_exist() -> None:
    for path in ("docker/mosquitto.conf", "docker/bridge.env", "docker/emulator.env"):
        assert path in COMPOSE
        assert (ROOT / path).is_file()
    assert "listener 1883" in (ROOT / "docker/mosquitto.conf").read_text()


def test_emulator_command_parses_and_matches_the_bridge_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = emulator_args()
    assert args[0] == "emulator"
    ctx = emulator_command.make_context("emulator", args[1:])
    env = env_file("emulator.env")
    assert ctx.params["appkey"] == env["TENCENT2MQTT_IVH__APPKEY"]
    assert ctx.params["access_token"] == env["TENCENT2MQTT_IVH__ACCESS_TOKEN"]
    assert str(ctx.params["sdkappid"]) == env["TENCENT2MQTT_DESK__SDKAPPID"]
    assert ctx.params["secret_key"] == env["TENCENT2MQTT_DESK__SECRET_KEY"]
    assert ctx.params["host"] == "0.0.0.0" and ctx.params["port"] == 8080

    monkeypatch.delenv("TENCENT2MQTT_CONFIG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(None)
    assert settings.ivh.has_credentials and settings.desk.has_credentials
    assert settings.ivh.channel.url == f"ws://emulator:8080{CHANNEL_PATH}"
    assert settings.mqtt.host == "mosquitto"


def test_bridge_env_and_healthcheck(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENCENT2MQTT_CONFIG", raising=False)
    for key, value in env_file("bridge.env").items():
        monkeypatch.setenv(key, value)
    assert load_settings(None).mqtt.url == "mqtt://mosquitto:1883"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "TENCENT2MQTT_HTTP__LISTEN=0.0.0.0:9100" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "127.0.0.1:9100/healthz" in dockerfile
    assert "127.0.0.1:9100:9100" in service("bridge")


CLUSTER = (ROOT / "docker-compose.cluster.yml").read_text()


def _cluster_service(name: str) -> str:
    match = re.search(rf"^  {name}:\n((?:    .*\n|\n)*)", CLUSTER, re.MULTILINE)
    assert match, name
    return match.group(1)


def test_cluster_compose_runs_three_instances_like_the_single_one() -> None:
    assert "\t" not in CLUSTER
    for line in CLUSTER.splitlines():
        assert (len(line) - len(line.lstrip(" "))) % 2 == 0, line
    services = set(re.findall(r"^  ([\w-]+):$", CLUSTER, re.M))
    assert {"mosquitto", "bridge-1", "bridge-2", "bridge-3", "emulator"} <= services
    assert _cluster_service("mosquitto") == service("mosquitto")
    assert _cluster_service("emulator").split("command:")[1] == service("emulator").split(
        "command:"
    )[1].replace("/emulator/state", "/emulator/stats", 1)
    ids, client_ids, ports = set(), set(), set()
    for n in (1, 2, 3):
        block = _cluster_service(f"bridge-{n}")
        assert 'TENCENT2MQTT_CLUSTER__ENABLED: "true"' in block
        ids.add(re.search(r"CLUSTER__INSTANCE_ID: (\S+)", block).group(1))  # type: ignore[union-attr]
        client_ids.add(re.search(r"MQTT__CLIENT_ID: (\S+)", block).group(1))  # type: ignore[union-attr]
        ports.add(re.search(r'"127.0.0.1:(\d+):9100"', block).group(1))  # type: ignore[union-attr]
        assert "env_file: ${BRIDGE_ENV:-docker/bridge.env}" in block
        assert "build: ." in block and "stop_grace_period:" in block
    assert len(ids) == len(client_ids) == len(ports) == 3  # each instance its own

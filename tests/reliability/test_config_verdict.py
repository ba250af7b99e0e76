"""`check-config` accepts exactly what `run` can run (issue 17). Hypothesis builds configs with
broken (and good) values for every key, in the TOML file and in every environment form; both
commands must reach the same verdict: the same problem lines and exit 2, or `run` starts (its
first broker-less connection attempt is logged) and stops cleanly on SIGTERM. Neither may ever
print a traceback."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bridge.cli.main import main
from tests.support import figures
from tests.support.broker import free_port
from tests.support.cli import TRACEBACK, Outcome, run_until

CLOSED = free_port()  # nothing listens here: `run` keeps trying, and says so in its log
READY = "MQTT cannot connect"


def _files(tmp: Path) -> dict[str, str]:
    ca = trustme.CA()
    client = ca.issue_cert("bridge.example")
    paths = {"ca": ca.cert_pem, "cert": client.cert_chain_pems[0], "key": client.private_key_pem}
    out = {}
    for name, blob in paths.items():
        out[name] = str(tmp / f"{name}.pem")
        blob.write_to_path(out[name])
    (tmp / "not.pem").write_text("not a certificate\n")
    (tmp / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    both = tmp / "both.pem"  # a client certificate with its key in one file
    both.write_bytes(client.private_key_and_cert_chain_pem.bytes())
    return {
        **out,
        "both": str(both),
        "not.pem": str(tmp / "not.pem"),
        "bad.pem": str(tmp / "bad.pem"),
        "missing": str(tmp / "missing.pem"),
        "dir": str(tmp),
    }


FILES = _files(Path(tempfile.mkdtemp(prefix="verdict-")))


def _pair(good: list[Any], bad: list[Any]) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    return st.sampled_from(good), st.sampled_from(bad)


DURATION = (
    st.sampled_from([0.5, 5, 3600, 7 * 86400, "2.5"]),
    st.one_of(
        st.sampled_from([0, -1, 1e300, 7 * 86400 + 1, "abc", "", "inf", "nan"]),
        st.floats(max_value=0),
        st.floats(min_value=7 * 86400 + 1),
    ),
)
COUNT = (st.integers(1, 1000), st.sampled_from([0, -3, "x", "1.5", ""]))
TOPIC = _pair(["kiosk", "ok/deep"], ["a/#", "", "/lead", "trail/", "a/+/b"])
HTTP_URL = _pair(
    ["http://127.0.0.1:1", "https://127.0.0.1:1/p"],
    ["notaurl", "ftp://h", "https://", "https://h:99999", "https://u:pw-7a1@h", "https://h?q=1",
     "http://a b", "https://h:0"],
)  # fmt: skip
URL = f"mqtt://127.0.0.1:{CLOSED}"
# Each key: (good values, broken values). TLS file keys name one of FILES.
KEYS: dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {
    "mqtt.url": _pair(
        [
            URL,
            f"mqtts://127.0.0.1:{CLOSED}",
            f"mqtt://alice:pw-9b2@127.0.0.1:{CLOSED}",
            f"MQTT://127.0.0.1:{CLOSED}/",
        ],
        [
            "notaurl",
            "http://h",
            "mqtt://",
            "mqtt://h:99999",
            "mqtt://h:0",
            "mqtt://h/path",
            f"mqtt://:pw-4c3@127.0.0.1:{CLOSED}",
            "mqtt://a b",
            "mqtt://h?x=1",
        ],
    ),
    "mqtt.client_id": _pair(["kiosk-1", ""], ["a\u0000b"]),
    "mqtt.protocol": _pair([4, 5, "5"], [3, "x", 5.5]),
    "mqtt.qos": _pair([0, 1, 2], [-1, 3, "a"]),
    "mqtt.keepalive": (st.integers(1, 65535), st.sampled_from([0, -1, 65536, "x"])),
    "mqtt.session_expiry": (st.integers(0, 2**32 - 1), st.sampled_from([-1, 2**32, "x"])),
    "mqtt.base_topic": TOPIC,
    "mqtt.tls_ca_file": _pair(["ca", "cert"], ["missing", "dir", "not.pem", "bad.pem", "key"]),
    "mqtt.tls_cert_file": _pair(["both"], ["cert", "missing", "not.pem", "bad.pem", "key"]),
    "mqtt.tls_key_file": _pair(["key"], ["cert", "missing", "dir", "not.pem"]),
    "mqtt.tls_insecure": _pair([True, False], ["maybe", 2]),
    "mqtt.reconnect_max_delay": DURATION,
    "ivh.enabled": _pair([True, False], ["yes please"]),
    "ivh.appkey": _pair(["app", ""], [7]),
    "ivh.access_token": _pair(["tok-5d1e", ""], [[1]]),
    "ivh.base_url": HTTP_URL,
    "ivh.poll_interval": DURATION,
    "ivh.closed_retention": (st.sampled_from([0, 1, 300]), st.sampled_from([-1, "x", "inf"])),
    "ivh.channel.url": _pair(
        ["ws://127.0.0.1:1/ws", "wss://h.example/ws"], ["http://h/ws", "wss://", "notaurl"]
    ),
    "ivh.channel.heartbeat_interval": DURATION,
    "ivh.channel.queue_size": COUNT,
    "desk.base_url": HTTP_URL,
    "desk.sdkappid": COUNT,
    "desk.identifier": _pair(["admin", ""], [[]]),
    "desk.ended_retention": (st.sampled_from([0, 1, 300]), st.sampled_from([-1, "x", "inf"])),
    "desk.secret_key": _pair(["key-8f2c", ""], [{}]),
    "desk.watch": (
        st.lists(st.sampled_from(["s1", "a.b:c@d", "Z9"])),
        st.tuples(
            st.lists(st.sampled_from(["s1", "Z9"]), max_size=2),
            st.sampled_from(["a/b", "#", "+", "", "-x", "x" * 129]),
        ).map(lambda parts: [*parts[0], parts[1]]),
    ),
    "desk.rate_limit": DURATION,
    "bridge.max_payload": COUNT,
    "bridge.dedup_window": (st.sampled_from([0, 60]), st.sampled_from([-1, "nan", "x"])),
    "retry.attempts": COUNT,
    "http.listen": _pair(
        ["", "LISTEN", ":LISTEN"],
        ["nonsense", "127.0.0.1:99999", ":0", "[::1:80", "host:port", "a b:1", "1.2.3.4:x"],
    ),
    "log.level": _pair(["debug", "INFO", "warning"], ["loud", 3]),
    "log.format": _pair(["text", "json"], ["xml"]),
    "homeassistant.enabled": _pair([True, False], ["on-ish"]),
    "homeassistant.prefix": TOPIC,
}
# Environment forms that are not one key: a whole section as JSON, unknown names.
EXTRA_ENV = _pair(
    [{}, {"MQTT": '{"qos": 0}'}, {"IVH__CHANNEL": '{"auto_connect": false}'}],
    [{"MQTT": "abc"}, {"DESK__WATCH": "abc"}, {"FOO__BAR": "1"}, {"MQTT__NOPE": "1"},
     {"MQTT__URL_FILE": "/x"}, {"IVH": "[1]"}, {"DESK__WATCH": '"s1"'}],
)  # fmt: skip


def _value(key: str, value: Any) -> Any:
    if key.startswith("mqtt.tls_") and key.endswith("_file"):
        return FILES[value]
    if key == "http.listen" and "LISTEN" in value:
        return value.replace("LISTEN", f"127.0.0.1:{free_port()}").replace(":127.0.0.1", "")
    return value


@st.composite
def configs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str], bool]:
    """(TOML data, environment): a few keys, each in the file or in a variable; half of the
    configs are all good (`run` must start), the others have broken values among good ones."""
    chosen = draw(st.lists(st.sampled_from(sorted(KEYS)), min_size=1, max_size=5, unique=True))
    all_good = draw(st.booleans())
    toml: dict[str, Any] = {"mqtt": {"url": URL}}
    good, bad = EXTRA_ENV
    extra = draw(good if all_good or draw(st.booleans()) else bad)
    env = {f"TENCENT2MQTT_{k}": v for k, v in extra.items()}
    for key in chosen:
        good, bad = KEYS[key]
        value = _value(key, draw(good if all_good or draw(st.booleans()) else bad))
        if (
            key == "mqtt.tls_key_file"
            and value == FILES["key"]
            and "mqtt.tls_cert_file" not in chosen
        ):
            toml["mqtt"]["tls_cert_file"] = FILES["cert"]  # a key alone is refused, rightly
        if draw(st.booleans()) and not (isinstance(value, str) and "\0" in value):
            env["TENCENT2MQTT_" + key.upper().replace(".", "__")] = _env_text(value)
        else:
            node = toml
            for part in key.split(".")[:-1]:
                node = node.setdefault(part, {})
            node[key.split(".")[-1]] = value
    return toml, env, all_good


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def _toml(data: dict[str, Any], prefix: str = "") -> str:
    out = f"[{prefix}]\n" if prefix else ""
    for key, value in data.items():
        if not isinstance(value, dict):
            out += f"{key} = {_toml_value(value)}\n"
    for key, value in data.items():
        if isinstance(value, dict):
            out += _toml(value, f"{prefix}.{key}" if prefix else key)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value != value:
        return "nan"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return json.dumps(value)


def _check_config(path: Path, env: dict[str, str]) -> Outcome:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TENCENT2MQTT_")}
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)], env={**unset, **env})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="verdict-run-") as tmp:
        yield Path(tmp)


@pytest.mark.timeout(600)
@settings(
    max_examples=int(os.environ.get("VERDICT_EXAMPLES", "20")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(config=configs())
def test_check_config_and_run_reach_the_same_verdict(
    config: tuple[dict[str, Any], dict[str, str], bool], workdir: Path
) -> None:
    toml, env, all_good = config
    path = workdir / "c.toml"
    path.write_text(_toml(toml))
    checked = _check_config(path, env)
    ran = run_until({**env, "TENCENT2MQTT_CONFIG": str(path)}, READY, workdir)
    assert TRACEBACK not in checked.err + ran.err, ran.err
    assert checked.code in (0, 2), checked.err
    assert checked.code == 0 or not all_good, checked.err  # good values are not refused
    if checked.code == 2:
        assert ran.code == 2, ran.err
        assert ran.problems == checked.problems
        assert checked.problems and all(":" in line for line in checked.problems)
        event(f"refused: {checked.problems[0].split(':')[0]}")
        figures.add("verdict_refused")
    else:
        assert READY in ran.err and ran.code == 0, ran.err
        event("ran")
        figures.add("verdict_ran")

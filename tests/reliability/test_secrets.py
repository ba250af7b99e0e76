"""Secrets (docs/reliability.md). The autouse scan in tests/conftest.py checks every test's log
records,
MQTT traffic and child-process logs for the configured secrets and any UserSig; here it is
shown to catch what it should, and secrets are read from `*_FILE` variables (Docker secrets)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.cli.demo.tone import tone_pcm, wav_of
from tests.reliability.conftest import calls, emulator_env
from tests.support import figures, leaks
from tests.support.bridge import BridgeProcess, mqtt_env
from tests.support.broker import Broker, free_port
from tests.support.cli import bridge_cli
from tests.support.cloud import Admin, emulator
from tests.support.mqtt_probe import Probe, Received
from tests.support.usersig_shape import a_usersig
from tests.support.world import World


def test_the_scanner_catches_planted_secrets() -> None:
    """A scanner that cannot fail proves nothing: plant each kind of leak and see it caught."""
    watch = leaks.LeakWatch()
    watch.secret("tok-PLANTED-1", "key-PLANTED-2", "pw-PLANTED-3")
    watch.secret_in_urls("mqtt://alice:url%2DPLANTED-4@host:1883", "https://no-userinfo")
    sig = a_usersig()
    watch.records.append("bridge.x INFO calling with tok-PLANTED-1")
    traffic = [("t/desk/s/event", "t/desk/s/event " + '{"usersig": "' + sig + '"}')]
    watch.source("mqtt probe t", lambda: traffic)
    watch.source("bridge process", lambda: [("log", "connect failed for pw-PLANTED-3")])
    watch.source("bridge cli", lambda: [("stdout", 'password = "url-PLANTED-4"')])
    hits = watch.scan()
    assert len(hits) == 4, hits
    assert any(h.startswith("log:") for h in hits)
    assert any("UserSig" in h for h in hits)
    assert any(h.startswith("bridge process") for h in hits)
    assert not any("PLANTED" in h for h in hits)  # the report never repeats a secret
    figures.add("planted_leaks_caught", len(hits))


def test_the_autouse_scan_sees_log_records_and_probes(
    no_secret_leaks: leaks.LeakWatch,
) -> None:
    """The live watch collects this test's records: a planted one would fail it."""
    logging.getLogger("bridge.test").warning("nothing secret here")
    assert any("nothing secret here" in r for r in no_secret_leaks.records)
    no_secret_leaks.secret("never-logged-secret")
    assert no_secret_leaks.scan() == []


async def test_a_probe_registers_its_traffic(world: World) -> None:
    await world.probe.request("bridge/health_check")
    names = [name for name, _ in leaks.watch().sources]
    assert any(name.startswith("mqtt probe") for name in names)
    assert leaks.watch().secrets  # settings_for and the emulator registered theirs
    sig = a_usersig()
    world.probe.messages.append(Received("x", sig.encode(), False))
    assert leaks.watch().scan(), "a UserSig in MQTT traffic must be reported"
    world.probe.messages.pop()


def test_the_usersig_shape_is_a_token_not_a_run_inside_standard_base64() -> None:
    """A UserSig in a query, JSON or a log line is caught; a WAV as standard base64 (whose
    letters can run 60 long between `+` and `/`) is not one."""
    sig = a_usersig()
    for text in (f"GET /v4/x?usersig={sig}&random=1", f'{{"usersig":"{sig}"}}', f"sig {sig}"):
        assert leaks.USERSIG_SHAPE.search(text), text
    wav = base64.b64encode(wav_of(tone_pcm(3.0))).decode()
    assert re.search(r"eJ[A-Za-z0-9]{60,}", wav)  # the run that looked like one
    assert not leaks.USERSIG_SHAPE.search(f'{{"audio":"{wav}"}}')


async def test_secrets_from_files_work_and_never_show(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    """Every secret of a bridge process from a `*_FILE` (Docker secrets); none leaks."""
    async with emulator() as emu, Admin(emu) as admin:
        env = {**mqtt_env(broker, base), **emulator_env(emu)}
        env["TENCENT2MQTT_IVH__ENABLED"] = env["TENCENT2MQTT_DESK__ENABLED"] = "true"
        for key in ("IVH__ACCESS_TOKEN", "DESK__SECRET_KEY"):
            path = tmp_path / key.lower()
            path.write_text(env.pop(f"TENCENT2MQTT_{key}") + "\n")
            env[f"TENCENT2MQTT_{key}_FILE"] = str(path)
        env["TENCENT2MQTT_LOG__LEVEL"] = "debug"  # the most a log can say
        sid = await admin.desk_session()
        proc = BridgeProcess(env, tmp_path)
        try:
            async with Probe(broker.port, base) as probe:
                proc.start()
                await probe.wait_json("bridge/state", lambda s: s["state"] == "online", 15)
                desk = await probe.request("desk/get_session_state", {"session_id": sid})
                ivh = await probe.request("ivh/list_sessions")
                await admin.fault("get_session_state", 1, error_code=70009)
                denied = await probe.request("desk/get_session_state", {"session_id": sid})
                info = await probe.wait_json("bridge/info")
                await asyncio.sleep(0.3)
        finally:
            proc.stop()
        made = await calls(admin, "get_session_state")
    assert desk["status"] == "ok" and ivh["status"] == "ok"  # the file secrets were used
    assert denied["error"]["code"] == "auth_failed"
    assert info["config"]["desk"]["secret_key"] == "**********"
    assert len(made) == 2
    assert "generated a UserSig" in proc.log()  # the debug log was on, and said nothing more
    assert leaks.watch().scan() == []  # (the autouse scan repeats this at teardown)
    figures.add("secret_file_runs")


URL_PASSWORD = "s3cr3tpw-in-the-url"


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[tuple[Broker, int]]:
    """A mosquitto with an open listener (for the probe) and one that takes only alice with
    `URL_PASSWORD`."""
    broker = Broker(tmp_path)
    auth_port = free_port()
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "alice", URL_PASSWORD], check=True)
    run_as = "user root\n" if os.geteuid() == 0 else ""  # root drops to a user who cannot read
    broker.conf.write_text(
        f"per_listener_settings true\nlistener {broker.port} 127.0.0.1\nallow_anonymous true\n"
        f"listener {auth_port} 127.0.0.1\nallow_anonymous false\npassword_file {passwd}\n"
        f"persistence false\n{run_as}"
    )
    broker.start()
    yield broker, auth_port
    broker.kill()


async def test_credentials_in_the_mqtt_url_are_used_and_never_show(
    password_broker: tuple[Broker, int], base: str, tmp_path: Path
) -> None:
    """Issue 17 defect 3: the URL's password was printed by check-config, logged, retained in
    `bridge/info`, and not even used. Now it logs in, and shows nowhere."""
    broker, auth_port = password_broker
    url = f"mqtt://alice:{URL_PASSWORD}@127.0.0.1:{auth_port}"
    env = {**mqtt_env(broker, base), "TENCENT2MQTT_MQTT__URL": url}
    checked = bridge_cli("check-config", env=env)
    assert URL_PASSWORD in leaks.watch().secrets  # the autouse scan now looks for it
    assert checked.code == 0 and 'url = "mqtt://127.0.0.1:' in checked.out
    assert 'username = "alice"' in checked.out and 'password = "**********"' in checked.out
    proc = BridgeProcess({**env, "TENCENT2MQTT_LOG__LEVEL": "debug"}, tmp_path)
    try:
        async with Probe(broker.port, base) as probe:
            proc.start()
            await probe.wait_json("bridge/state", lambda s: s["state"] == "online", 15)
            info = await probe.wait_json("bridge/info")
            logging.getLogger("bridge.test").warning("a library logs %s", url)
    finally:
        proc.stop()
    assert info["config"]["mqtt"]["url"] == f"mqtt://127.0.0.1:{auth_port}"
    assert info["config"]["mqtt"]["password"] == "**********"
    assert f"127.0.0.1:{auth_port}" in proc.log()
    assert any("a library logs mqtt://alice:***@" in r for r in leaks.watch().records)
    assert leaks.watch().scan() == []
    figures.add("url_credential_runs")

"""The Desk callback path is a secret (docs/desk.md): a bridge process with debug logging receives
accepted and refused callbacks from the emulator and from a guesser, and the path shows in no
log line, MQTT payload (bridge/info included) or answer. The autouse scan (tests/conftest.py)
knows the path: `BridgeProcess` registers `DESK__CALLBACK` like the other secrets."""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path

import httpx

from tests.reliability.conftest import emulator_env
from tests.support import leaks
from tests.support.bridge import BridgeProcess, mqtt_env
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator
from tests.support.mqtt_probe import Probe


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_callback_path_never_shows(broker: Broker, base: str, tmp_path: Path) -> None:
    path = f"/desk/callback/{secrets.token_urlsafe(24)}"
    port = _free_port()
    async with emulator() as emu, Admin(emu) as admin:
        env = {**mqtt_env(broker, base), **emulator_env(emu)}
        env |= {"TENCENT2MQTT_DESK__ENABLED": "true", "TENCENT2MQTT_LOG__LEVEL": "debug"}
        env |= {
            "TENCENT2MQTT_DESK__CALLBACK": path,
            "TENCENT2MQTT_HTTP__LISTEN": f"127.0.0.1:{port}",
        }
        proc = BridgeProcess(env, tmp_path)
        assert path in leaks.watch().secrets
        url = f"http://127.0.0.1:{port}{path}"
        try:
            async with Probe(broker.port, base) as probe:
                proc.start()
                await probe.wait_json("bridge/state", lambda s: s["state"] == "online", 15)
                await admin.call("POST", "/desk/callback", {"url": url})
                sid = await admin.desk_session()
                await admin.call(
                    "POST", f"/desk/sessions/{sid}/chat", {"role": "user", "text": "x"}
                )
                await probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "user_message")
                async with httpx.AsyncClient() as http:
                    refused = await http.post(url, params={"SdkAppid": "1"}, json={})
                    guessed = await http.post(url + "x", json={})
                info = await probe.wait_json("bridge/info")
                await asyncio.sleep(0.3)
        finally:
            proc.stop()
    assert refused.status_code == 403 and guessed.status_code == 404
    assert path not in refused.text + guessed.text
    assert info["config"]["desk"]["callback"] == "**********"
    assert "desk callback refused (403)" in proc.log()  # logged, without the path
    assert leaks.watch().scan() == []

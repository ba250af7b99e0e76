"""TLS to the broker (docs/configuration.md): a mosquitto TLS listener with a throwaway CA made
here. The bridge
verifies the server against its CA, presents a client certificate where the broker asks for one,
and refuses a server it cannot verify unless `tls_insecure` is set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from bridge.cli.main import main
from tests.reliability.conftest import until
from tests.support import figures, leaks
from tests.support.bridge import BridgeProcess, mqtt_env, running, settings_for
from tests.support.broker import Broker, free_port
from tests.support.cli import TRACEBACK, bridge_cli, run_until
from tests.support.mqtt_probe import Probe


@dataclass(frozen=True)
class TlsBroker:
    """A broker with a plain listener (for the probe) and two TLS ones."""

    broker: Broker
    tls_port: int  # server certificate only
    mtls_port: int  # client certificate required
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _pems(tmp: Path) -> dict[str, Path]:
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("bridge.example")
    files = {
        "ca": ca.cert_pem,
        "other_ca": other.cert_pem,
        "server_cert": server.cert_chain_pems[0],
        "server_key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = tmp / f"{name}.pem"
        blob.write_to_path(str(paths[name]))
    return paths


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    tmp = tmp_path_factory.mktemp("tls")
    pems = _pems(tmp)
    tls_port, mtls_port = free_port(), free_port()
    server = f"cafile {pems['ca']}\ncertfile {pems['server_cert']}\nkeyfile {pems['server_key']}\n"
    # mosquitto started as root drops to its own user, which cannot read pytest's private tmp
    run_as = "user root\n" if os.geteuid() == 0 else ""
    extra = run_as + (
        f"listener {tls_port} 127.0.0.1\n{server}"
        f"listener {mtls_port} 127.0.0.1\n{server}require_certificate true\n"
    )
    broker = Broker(tmp, extra=extra)
    broker.start()
    yield TlsBroker(
        broker,
        tls_port,
        mtls_port,
        pems["ca"],
        pems["client_cert"],
        pems["client_key"],
        pems["other_ca"],
    )
    broker.kill()


def _settings(port: int, base: str, **mqtt: Any) -> Any:
    return settings_for(f"mqtts://127.0.0.1:{port}", base, mqtt=mqtt)


async def _works(t: TlsBroker, base: str, **mqtt: Any) -> None:
    async with running(_settings(mqtt.pop("port"), base, **mqtt)), Probe(t.broker.port, base) as p:
        reply = await p.request("bridge/health_check")
        assert reply["status"] == "ok" and reply["data"]["mqtt"]["connected"]
    figures.add("tls_connects")


async def _refused(port: int, base: str, why: str, **mqtt: Any) -> None:
    """The handshake fails, the bridge's own warning says why (`why`), and it never counts
    itself connected."""
    records = leaks.watch().records

    def said() -> bool:
        return any(r.startswith("bridge.mqtt.link ") and why in r for r in records)

    async with running(_settings(port, base, **mqtt), connected=False) as app:
        await until(said, 10, f"the bridge's warning naming {why!r}")
        assert not app.link.connected.is_set()
    figures.add("tls_refusals")


async def test_verifies_the_server_with_its_ca(tls: TlsBroker, base: str) -> None:
    await _works(tls, base, port=tls.tls_port, tls_ca_file=str(tls.ca))


async def test_presents_a_client_certificate(tls: TlsBroker, base: str) -> None:
    await _works(
        tls,
        base,
        port=tls.mtls_port,
        tls_ca_file=str(tls.ca),
        tls_cert_file=str(tls.cert),
        tls_key_file=str(tls.key),
    )


async def test_without_its_client_certificate_it_is_refused(tls: TlsBroker, base: str) -> None:
    await _refused(tls.mtls_port, base, "CERTIFICATE_REQUIRED", tls_ca_file=str(tls.ca))


async def test_refuses_a_server_it_cannot_verify(tls: TlsBroker, base: str) -> None:
    failed = "CERTIFICATE_VERIFY_FAILED"
    await _refused(tls.tls_port, base, failed, tls_ca_file=str(tls.other_ca))
    await _refused(tls.tls_port, base + "x", failed)  # the system CAs do not know it either


async def test_tls_insecure_connects_anyway(tls: TlsBroker, base: str) -> None:
    await _works(tls, base, port=tls.tls_port, tls_ca_file=str(tls.other_ca), tls_insecure=True)


# -- issue 17: TLS files are loaded when the config is read (defects 1 and 2) ------------------

KEYS = ("tls_ca_file", "tls_cert_file", "tls_key_file")


def _bad_file(kind: str, tmp: Path) -> Path:
    """A TLS file `run` cannot use: missing, unreadable, not PEM, or PEM holding garbage."""
    path = tmp / f"{kind.replace(' ', '_')}.pem"
    if kind == "missing":
        return path
    if kind == "unreadable":
        path.mkdir()  # root reads any file mode: a directory is unreadable as a file for all
        return path
    if kind == "not PEM":
        path.write_bytes(b"\x00\x01 this is no certificate\n")
    else:
        garbage = "bm90IGEgY2VydA=="  # base64 of "not a cert"
        path.write_text(f"-----BEGIN CERTIFICATE-----\n{garbage}\n-----END CERTIFICATE-----\n")
    return path


def _tls_env(t: TlsBroker, key: str, bad: Path, port: int) -> dict[str, str]:
    """Good files for the other keys (a client certificate and its key, the CA), `bad` for `key`."""
    files = {"tls_ca_file": t.ca, "tls_cert_file": t.cert, "tls_key_file": t.key, key: bad}
    env = {f"TENCENT2MQTT_MQTT__{k.upper()}": str(v) for k, v in files.items()}
    return {**env, "TENCENT2MQTT_MQTT__URL": f"mqtts://127.0.0.1:{port}"}


def _as_toml(env: dict[str, str], tmp: Path) -> Path:
    lines = ["[mqtt]"] + [
        f'{name.removeprefix("TENCENT2MQTT_MQTT__").lower()} = "{value}"'
        for name, value in env.items()
    ]
    path = tmp / "tls.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("form", ["file", "environment"])
@pytest.mark.parametrize("kind", ["missing", "unreadable", "not PEM", "bad PEM"])
@pytest.mark.parametrize("key", KEYS)
def test_check_config_refuses_tls_files_run_cannot_load(
    tls: TlsBroker, tmp_path: Path, key: str, kind: str, form: str
) -> None:
    """Defect 1: check-config said OK and `run` died with a traceback; now one line, exit 2."""
    env = _tls_env(tls, key, _bad_file(kind, tmp_path), tls.mtls_port)
    args = ["check-config"]
    if form == "file":
        args += ["--config", str(_as_toml(env, tmp_path))]
        env = {}
    result = CliRunner().invoke(main, args, env={**_no_bridge_env(), **env})
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    problems = result.stderr.splitlines()[1:]
    assert len(problems) == 1 and problems[0].startswith(f"  mqtt.{key}: "), problems
    figures.add("tls_files_refused")


@pytest.mark.parametrize(
    ("key", "kind"),
    [("tls_ca_file", "missing"), ("tls_cert_file", "not PEM"), ("tls_key_file", "bad PEM")],
)
def test_run_refuses_them_the_same_way(tls: TlsBroker, tmp_path: Path, key: str, kind: str) -> None:
    """`run` exits 2 with check-config's line, before connecting, and no traceback."""
    env = _tls_env(tls, key, _bad_file(kind, tmp_path), tls.mtls_port)
    checked = bridge_cli("check-config", env=env)
    ran = run_until(env, "MQTT connected", tmp_path)
    assert checked.code == ran.code == 2
    assert checked.problems == ran.problems and ran.problems[0].startswith(f"mqtt.{key}: ")
    assert TRACEBACK not in ran.err + checked.err


async def test_tls_configured_by_environment_variables(
    tls: TlsBroker, base: str, tmp_path: Path
) -> None:
    """Defect 2: `TENCENT2MQTT_MQTT__TLS_CA_FILE` (and CERT, KEY) were refused as `_FILE`s."""
    env = {**mqtt_env(tls.broker, base), **_tls_env(tls, "tls_key_file", tls.key, tls.mtls_port)}
    proc = BridgeProcess(env, tmp_path)
    try:
        async with Probe(tls.broker.port, base) as probe:
            proc.start()
            state = await probe.wait_json("bridge/state", lambda s: s["state"] == "online", 15)
            reply = await probe.request("bridge/health_check")
    finally:
        proc.stop()
    assert state["state"] == "online" and reply["status"] == "ok"
    figures.add("tls_connects")


def _no_bridge_env() -> dict[str, str | None]:
    """CliRunner's environment: every `TENCENT2MQTT_*` of this process unset."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TENCENT2MQTT_")}
    return unset

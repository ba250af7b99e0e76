"""TLS to the broker (SPEC 4): a mosquitto TLS listener with a throwaway CA made here. The bridge
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

from tests.reliability.conftest import until
from tests.support import figures, leaks
from tests.support.bridge import running, settings_for
from tests.support.broker import Broker, free_port
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
    """The handshake fails (`why` is logged) and the bridge never counts itself connected."""
    records = leaks.watch().records
    async with running(_settings(port, base, **mqtt), connected=False) as app:
        await until(lambda: any(why in r for r in records), 10, f"a log line with {why!r}")
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

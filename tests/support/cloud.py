"""The emulator as the upstream of a test bridge, and a small client for its admin API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bridge.emulator import Emulator, EmulatorConfig
from bridge.features.desk.feature import VERIFY_SESSION
from tests.support import leaks


@contextlib.asynccontextmanager
async def emulator(**overrides: Any) -> AsyncIterator[Emulator]:
    """A fast emulator on a free loopback port."""
    params: dict[str, Any] = {"prepare_delay": 0.05, "speak_delay": 0.01}
    params.update(overrides)
    config = EmulatorConfig.generate(**params)
    leaks.watch().secret(config.access_token, config.secret_key)
    async with Emulator(config) as emu:
        yield emu


def upstream_sections(emu: Emulator, **fast: Any) -> dict[str, dict[str, Any]]:
    """Config sections pointing a bridge at the emulator, with test-speed intervals."""
    cfg = emu.config
    ivh: dict[str, Any] = {
        "enabled": True,
        "base_url": emu.base_url,
        "appkey": cfg.appkey,
        "access_token": cfg.access_token,
        "poll_interval": 0.2,
        "closed_retention": 1.0,
        "request_timeout": 5.0,
        "channel": {"url": emu.ws_url, "heartbeat_interval": 5.0, "text_interval": 1.0},
    }
    desk: dict[str, Any] = {
        "enabled": True,
        "base_url": emu.base_url,
        "sdkappid": cfg.sdkappid,
        "identifier": cfg.identifier,
        "secret_key": cfg.secret_key,
        "poll_interval": 0.2,
        "rate_limit": 200.0,
    }
    retry = {"attempts": 3, "initial_delay": 0.02, "max_delay": 0.1, "deadline": 5.0}
    sections = {"ivh": ivh, "desk": desk, "retry": retry}
    for name, values in fast.items():
        sections[name] = {**sections.get(name, {}), **values}
    return sections


class Admin:
    """The emulator's `/emulator/` admin API."""

    def __init__(self, emu: Emulator) -> None:
        self._http = httpx.AsyncClient(base_url=emu.base_url + "/emulator", timeout=10)

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One admin call; raises on HTTP errors."""
        response = await self._http.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    async def journal(self, path: str = "", *, own_checks: bool = False) -> list[dict[str, Any]]:
        """Journal entries whose path contains `path`; the bridge's own Desk credentials
        checks (at start, for /readyz) only with `own_checks`, since no command caused them."""
        body = await self.call("GET", f"/journal?path={path}")
        entries = list(body["entries"] if isinstance(body, dict) else body)
        if own_checks:
            return entries
        return [e for e in entries if e.get("session_id") != VERIFY_SESSION]

    async def set_ivh_status(self, sid: str, status: int) -> None:
        """Move an IVH session to `status`."""
        await self.call("POST", f"/ivh/sessions/{sid}/status", {"status": status})

    async def drop(self, sid: str) -> None:
        """Drop a session's command-channel socket."""
        await self.call("POST", f"/ivh/sessions/{sid}/drop")

    async def desk_session(self, **fields: Any) -> str:
        """Create a Desk session; its id."""
        body = await self.call("POST", "/desk/sessions", fields)
        return str(body["session_id"])

    async def desk_state(self, sid: str, state: str, agent_id: str | None = None) -> None:
        """Move a Desk session."""
        await self.call(
            "POST", f"/desk/sessions/{sid}/state", {"state": state, "agent_id": agent_id}
        )

    async def end_desk(self, sid: str) -> None:
        """End a Desk session (then 141005)."""
        await self.call("DELETE", f"/desk/sessions/{sid}")

    async def messages(self, sid: str) -> list[dict[str, Any]]:
        """Stream messages a Desk session received."""
        body = await self.call("GET", f"/desk/sessions/{sid}/messages")
        return list(body["messages"] if isinstance(body, dict) else body)

    async def fault(self, path: str, count: int, **kind: Any) -> None:
        """Inject a fault into the next `count` calls of `path`."""
        await self.call("POST", "/faults", {"path": path, "count": count, **kind})

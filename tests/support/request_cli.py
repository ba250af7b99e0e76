"""`tencent2mqtt request` run as a user runs it: its own process, configured by environment."""

from __future__ import annotations

import asyncio
import os
import sys


async def cli(url: str, base: str, *args: str, protocol: int = 5) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of one `request` against the broker at `url`."""
    env = {
        **os.environ,
        "TENCENT2MQTT_CONFIG": "",
        "TENCENT2MQTT_MQTT__URL": url,
        "TENCENT2MQTT_MQTT__BASE_TOPIC": base,
        "TENCENT2MQTT_MQTT__PROTOCOL": str(protocol),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "request", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()

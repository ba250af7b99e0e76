"""The `mqtt.fast_path` setting the suite runs with, read from the environment as the bridge
reads it (`TENCENT2MQTT_MQTT__FAST_PATH`), for tests that build an `MqttConfig` themselves;
CI runs the integration and reliability tests with it on and off (scripts/test)."""

from __future__ import annotations

import os

from pydantic import TypeAdapter

ENV = "TENCENT2MQTT_MQTT__FAST_PATH"


def fast_path_setting() -> bool:
    """The setting in the environment; on when unset, as the bridge's default."""
    return TypeAdapter(bool).validate_python(os.environ.get(ENV, "true"))

"""A private mosquitto on a free loopback port (never the system one), killable and restartable.

The product's launcher (`bridge.cli.demo.broker`, used by `tencent2mqtt demo`) does the
work; the tests
name it `Broker`.
"""

from __future__ import annotations

from bridge.cli.demo.broker import Mosquitto as Broker
from bridge.cli.demo.broker import free_port, wait_port

__all__ = ["Broker", "free_port", "wait_port"]

"""Composition root: builds the parts and runs every long-running task in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from bridge.actions import Registry, specs_of
from bridge.config import RetryConfig, Settings
from bridge.dispatcher import Dispatcher
from bridge.envelope import Emitter, Publisher
from bridge.health import BridgeFeature
from bridge.homeassistant import HomeAssistant
from bridge.metrics import Metrics
from bridge.mqtt import MqttLink
from bridge.mqtt_inbox import Inbound
from bridge.ownership import Ownership
from bridge.tencent import lean
from bridge.tencent.retry import RetryPolicy
from bridge.topics import Topics

log = logging.getLogger(__name__)


class Feature(Protocol):
    """A service the bridge runs: actions on it are registered, `run()` is a named task."""

    name: str

    async def run(self) -> None:
        """Long-running work (polling, channels); returns only when there is none."""

    async def aclose(self) -> None:
        """Finish in-flight work and release resources (SPEC 3.8)."""

    def status(self) -> dict[str, Any]:
        """This feature's part of `bridge/health`."""


@dataclass(frozen=True)
class Deps:
    """What every feature is built from."""

    settings: Settings
    topics: Topics
    publisher: Publisher
    emitter: Emitter
    metrics: Metrics
    link_connected: asyncio.Event
    ownership: Ownership


FeatureFactory = Callable[[Deps], "Feature | None"]


def feature_factories() -> list[tuple[type, FeatureFactory]]:
    """The service features, with the class that declares their actions."""
    from bridge.desk.feature import DeskFeature, build_desk
    from bridge.ivh.feature import IvhFeature, build_ivh

    return [(IvhFeature, build_ivh), (DeskFeature, build_desk)]


def all_action_specs() -> list[Any]:
    """Every action any bridge can serve, enabled or not (for docs and AsyncAPI)."""
    specs = list(specs_of(BridgeFeature))
    for cls, _ in feature_factories():
        specs.extend(specs_of(cls))
    return sorted(specs, key=lambda spec: spec.key)


class App:
    """One bridge: the MQTT link, the dispatcher and the features."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.mqtt.base_topic)
        self.metrics = Metrics()
        self.ownership = Ownership(settings.mqtt.effective_client_id())
        self.link = MqttLink(
            settings.mqtt,
            self.topics,
            subscriptions=self._subscriptions(),
            waiting=10 * settings.bridge.max_inflight,
        )
        self.emitter = Emitter(self.link, self.topics)
        self.registry = Registry()
        self.bridge = BridgeFeature(
            settings=settings, topics=self.topics, publisher=self.link, snapshot=self.snapshot
        )
        self.registry.include(self.bridge)
        self.link.on_connect.append(self.bridge.publish_health)  # "connected" as of now
        self.features = self._build_features()
        self.dispatcher = Dispatcher(
            registry=self.registry,
            known_actions={spec.key for spec in all_action_specs()},
            publisher=self.link,
            emitter=self.emitter,
            topics=self.topics,
            config=settings.bridge,
        )
        self.homeassistant = self._build_homeassistant()
        self.metrics.bind(self)

    def _subscriptions(self) -> list[str]:
        subs = self.topics.subscriptions()
        if self.settings.homeassistant.enabled:
            subs += HomeAssistant.subscriptions(self.settings.homeassistant.prefix)
        return subs

    def _build_homeassistant(self) -> HomeAssistant | None:
        """Home Assistant discovery, hooked to IVH session transitions, when enabled."""
        if not self.settings.homeassistant.enabled:
            return None
        ha = HomeAssistant(
            topics=self.topics,
            prefix=self.settings.homeassistant.prefix,
            publisher=self.link,
            services=self.services,
            settle=max(1.0, 3 * self.settings.ivh.poll_interval),
        )
        from bridge.desk.feature import DeskFeature
        from bridge.ivh.feature import IvhFeature

        for feature in self.features:
            if isinstance(feature, IvhFeature):
                feature.on_transition(ha.session_changed)
            if isinstance(feature, DeskFeature):
                feature.on_watch(ha.desk_watched)
        return ha

    def _build_features(self) -> list[Feature]:
        deps = Deps(
            settings=self.settings,
            topics=self.topics,
            publisher=self.link,
            emitter=self.emitter,
            metrics=self.metrics,
            link_connected=self.link.connected,
            ownership=self.ownership,
        )
        features = []
        for _, factory in feature_factories():
            feature = factory(deps)
            if feature is not None:
                self.registry.include(feature)
                features.append(feature)
        return features

    @property
    def services(self) -> list[str]:
        """Enabled services."""
        return [feature.name for feature in self.features]

    def snapshot(self) -> dict[str, Any]:
        """The health document's body: MQTT, services, queues."""
        body: dict[str, Any] = {
            "mqtt": {
                "connected": self.link.connected.is_set(),
                "reconnects": max(0, self.link.reconnects - 1),
                "outbox_depth": self.link.outbox_depth,
                "dropped": self.link.dropped,
                "refused": self.link.refused,
                "inbound_waiting": self.link.inbound_waiting,
            },
            "actions_inflight": self.dispatcher.inflight if hasattr(self, "dispatcher") else 0,
        }
        for feature in self.features:
            body[feature.name] = feature.status()
        return body

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down as SPEC 3.8 says."""
        self.bridge.publish_info(self.services)
        if self.homeassistant is not None:
            self.homeassistant.publish_all()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self.link.run(self), name="mqtt-link"),
                tg.create_task(_supervised("health", self.bridge.run), name="health"),
            ]
            for feature in self.features:
                name = f"feature:{feature.name}"
                tasks.append(tg.create_task(_supervised(name, feature.run), name=name))
            tasks.extend(self.extra_tasks(tg))
            await stop.wait()
            await self.shutdown()
            for task in tasks:
                task.cancel()

    def offer(self, msg: Inbound) -> bool:
        """The link's inbox: Home Assistant's status, else the dispatcher (False: full)."""
        if self.homeassistant is not None and self.homeassistant.handles(msg):
            return True
        return self.dispatcher.offer(msg)

    async def room(self) -> None:
        """Return once the dispatcher can take a message."""
        await self.dispatcher.room()

    def refuse(self, msg: Inbound) -> None:
        """Too many wait: Home Assistant's status is cheap to take, commands are refused."""
        if self.homeassistant is not None and self.homeassistant.handles(msg):
            return
        self.dispatcher.refuse(msg)

    def extra_tasks(self, tg: asyncio.TaskGroup) -> list[asyncio.Task[None]]:
        """Optional tasks: the HTTP endpoint, Home Assistant's stale-device sweep."""
        tasks = []
        if self.settings.http.listen:
            from bridge.http import serve_http

            serve = _supervised("http", lambda: serve_http(self))
            tasks.append(tg.create_task(serve, name="http"))
        if self.homeassistant is not None:
            sweep = _supervised("homeassistant", self.homeassistant.run)
            tasks.append(tg.create_task(sweep, name="homeassistant"))
        return tasks

    async def shutdown(self) -> None:
        """Stop taking commands, finish in-flight calls, close channels, say offline."""
        timeout = self.settings.bridge.shutdown_timeout
        log.info("shutting down")
        await self.dispatcher.close(timeout)
        for feature in self.features:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(feature.aclose(), timeout)
        await self.link.close(grace=min(5.0, timeout))


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived task; log and restart it if it fails, so one bug never stops the bridge."""
    while True:
        try:
            await run()
            return
        except Exception:
            log.exception("task %s failed; restarting in 1 s", name)
            await asyncio.sleep(1.0)


def retry_policy(cfg: RetryConfig) -> RetryPolicy:
    """The clients' retry policy from `[retry]`."""
    return RetryPolicy(
        attempts=cfg.attempts,
        initial_delay=cfg.initial_delay,
        max_delay=cfg.max_delay,
        deadline=cfg.deadline,
    )


def http_client(timeout: float) -> httpx.AsyncClient:
    """An HTTP client for one Tencent API, kept alive, with the service's timeout."""
    return lean.client(timeout)

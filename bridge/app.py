"""Composition root: builds the parts, hands each feature what it needs, and runs every
long-running task in one TaskGroup."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, get_args

from bridge.config import Settings
from bridge.core.actions import ActionSpec, Registry, specs_of
from bridge.core.dispatcher import Dispatcher
from bridge.core.envelope import Emitter, dumps
from bridge.core.feature import Feature, handler_of, subscriptions_of, verifier_of
from bridge.core.inbound import Inbound
from bridge.core.membership import Change
from bridge.core.observe import Service
from bridge.core.ownership import Ownership
from bridge.core.topics import Topics
from bridge.errors import OUTCOMES
from bridge.features.cluster import ClusterFeature
from bridge.features.deps import Deps
from bridge.features.desk.feature import DeskFeature, build_desk
from bridge.features.health import BridgeFeature
from bridge.features.homeassistant import build_homeassistant
from bridge.features.ivh.feature import IvhFeature, build_ivh
from bridge.mqtt.link import MqttLink
from bridge.ops.listen import bind_listen
from bridge.ops.metrics import Metrics
from bridge.ops.readout import Readout
from bridge.tencent import fastpost
from bridge.tencent.session import http_client, retry_policy

log = logging.getLogger(__name__)

FeatureFactory = Callable[[Deps], "Feature | None"]
# The upstream services, with the class that declares their actions.
SERVICES: list[tuple[type, FeatureFactory]] = [(IvhFeature, build_ivh), (DeskFeature, build_desk)]


def all_action_specs() -> list[ActionSpec]:
    """Every action any bridge can serve, enabled or not (for docs and AsyncAPI)."""
    specs = list(specs_of(BridgeFeature))
    for cls, _ in SERVICES:
        specs.extend(specs_of(cls))
    return sorted(specs, key=lambda spec: spec.key)


class App:
    """One bridge: the MQTT link, the dispatcher and the features."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics(settings.mqtt.base_topic)
        self.metrics = Metrics(
            actions={spec.key for spec in all_action_specs()},
            services=get_args(Service),
            outcomes=OUTCOMES,
        )
        clustered = settings.cluster.enabled
        self.ownership = Ownership(settings.instance_id(), clustered=clustered)
        self.link = MqttLink(
            settings.mqtt,
            self.topics,
            subscriptions=self.topics.subscriptions(),
            waiting=10 * settings.bridge.max_inflight,
            will=self._will(),
            reassert=self.topics.is_bridge_topic if clustered else None,
        )
        self.cluster = self._build_cluster() if clustered else None
        self.emitter = Emitter(self.link, self.topics)
        self.registry = Registry()
        self.bridge = BridgeFeature(
            settings=settings,
            topics=self.topics,
            publisher=self.link,
            snapshot=self.snapshot,
            cluster=self.cluster.status if self.cluster else None,
        )
        self.registry.include(self.bridge)
        self.link.on_connect.append(self.bridge.publish_health)  # "connected" as of now
        self.features = self._build_features(self._deps())
        self._handlers = [h for h in map(handler_of, self.features) if h is not None]
        if self.cluster is not None:
            self._join_cluster(self.cluster)
        for feature in self.features:
            self.link.add_subscriptions(subscriptions_of(feature))
        self.dispatcher = Dispatcher(
            registry=self.registry,
            known_actions={spec.key for spec in all_action_specs()},
            publisher=self.link,
            emitter=self.emitter,
            topics=self.topics,
            config=settings.bridge,
            disabled=_disabled_services(settings),
            owns=self.ownership.owns if clustered else None,
            unowned=self.ownership.answers_unowned if clustered else None,
        )
        self.metrics.bind(self.readout())
        self._http_socket: socket.socket | None = None

    def _will(self) -> bytes | None:
        if not self.settings.cluster.enabled:
            return None
        instance = self.settings.instance_id()
        return dumps({"state": "offline", "reason": "connection_lost", "instance": instance})

    def _build_cluster(self) -> ClusterFeature:
        cluster = ClusterFeature(
            ownership=self.ownership,
            topics=self.topics,
            publisher=self.link,
            settle=self.settings.cluster.settle,
            keepalive=self.settings.mqtt.keepalive,
            group=self.settings.cluster_group(),
            release_bound=release_bound(self.settings),
        )
        self.link.on_connect.append(cluster.connected)
        self.link.on_disconnect.append(cluster.disconnected)
        self.link.add_subscriptions(cluster.subscriptions())
        return cluster

    def _join_cluster(self, cluster: ClusterFeature) -> None:
        """The features that own keys count them and release them on a move."""
        self._handlers.insert(0, cluster.handles)
        for feature in self.features:
            owned, release = getattr(feature, "owned", None), getattr(feature, "release", None)
            if callable(owned):
                cluster.counters.append(owned)
            if callable(release):
                cluster.releasers.append(feature)  # type: ignore[arg-type]
        cluster.membership.listeners.append(lambda _: self.bridge.publish_info(self.services))
        cluster.membership.listeners.append(self._fenced)

    def _fenced(self, change: Change) -> None:
        if change.fenced:
            self.dispatcher.fence()

    def _deps(self) -> Deps:
        fast = fastpost.enabled(self.settings.bridge.http_fast_path)  # checked (and logged) once
        return Deps(
            settings=self.settings,
            topics=self.topics,
            publisher=self.link,
            emitter=self.emitter,
            observe_call=self.metrics.observe_call,
            link_connected=self.link.connected,
            ownership=self.ownership,
            retry=retry_policy(self.settings.retry),
            http_client=functools.partial(http_client, fast_path=fast),
            membership=self.cluster.membership if self.cluster else None,
        )

    def _build_features(self, deps: Deps) -> list[Feature]:
        features: list[Feature] = []
        for _, factory in SERVICES:
            feature = factory(deps)
            if feature is not None:
                self.registry.include(feature)
                features.append(feature)
        ha = build_homeassistant(deps, [f.name for f in features])
        if ha is not None:
            features.append(ha)
        return features

    @property
    def services(self) -> list[str]:
        """Enabled upstream services."""
        return [f.name for f in self.features if getattr(f, "upstream", False)]

    def readout(self) -> Readout:
        """What the HTTP endpoint and the metrics read, as callbacks."""
        return Readout(
            snapshot=self.snapshot,
            outcomes=lambda: self.dispatcher.outcomes,
            services=lambda: self.services,
            verify=self._verify,
            endpoints=self._http_endpoints,
        )

    def _http_endpoints(self) -> dict[str, Any]:
        """Features' own HTTP endpoints (the Desk callback), on the bridge's endpoint."""
        endpoints: dict[str, Any] = {}
        for feature in self.features:
            fn = getattr(feature, "http_endpoints", None)
            if callable(fn):
                endpoints.update(fn())
        return endpoints

    async def _verify(self) -> None:
        """Let each service that can judge itself with a real call do so (bounded)."""
        checks = [verify() for verify in map(verifier_of, self.features) if verify is not None]
        if checks:
            timeout = self.settings.desk.request_timeout + 1.0
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*checks, return_exceptions=True)

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
        if getattr(self, "cluster", None) is not None:
            assert self.cluster is not None
            body["cluster"] = self.cluster.status()
        return body

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then shut down: stop taking commands, finish, say offline.
        Raises `ListenError` before anything starts when `http.listen` cannot be bound."""
        address = self.settings.http.address
        self._http_socket = bind_listen(*address) if address is not None else None
        self.bridge.publish_info(self.services)
        for feature in self.features:
            start = getattr(feature, "start", None)
            if callable(start):
                start()
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self.link.run(self), name="mqtt-link"),
                tg.create_task(_supervised("health", self.bridge.run), name="health"),
            ]
            for feature in self.features:
                name = f"feature:{feature.name}"
                tasks.append(tg.create_task(_supervised(name, feature.run), name=name))
            if self.cluster is not None:
                tasks.append(
                    tg.create_task(_supervised("cluster", self.cluster.run), name="cluster")
                )
            if self._http_socket is not None:
                tasks.append(tg.create_task(_supervised("http", self._serve_http), name="http"))
            await stop.wait()
            await self.shutdown()
            for task in tasks:
                task.cancel()

    async def _serve_http(self) -> None:
        from bridge.ops.http import serve_http  # uvicorn is imported only when it serves

        listen, sock = self.settings.http.listen, self._http_socket
        await serve_http(listen, self.readout(), self.metrics, sock=sock)

    def offer(self, msg: Inbound) -> bool:
        """The link's inbox: a feature's own topic, else the dispatcher (False: full)."""
        if self._own_topic(msg):
            return True
        return self.dispatcher.offer(msg)

    async def room(self) -> None:
        """Return once the dispatcher can take a message."""
        await self.dispatcher.room()

    def refuse(self, msg: Inbound) -> None:
        """Too many wait: a feature's own topic is cheap to take, commands are refused."""
        if not self._own_topic(msg):
            self.dispatcher.refuse(msg)

    def keeps_order(self, msg: Inbound) -> bool:
        """In a cluster, membership messages keep their place in line (docs/scale-out.md)."""
        return self.cluster is not None and self.cluster.membership_message(msg)

    def _own_topic(self, msg: Inbound) -> bool:
        return any(handles(msg) for handles in self._handlers)

    async def shutdown(self) -> None:
        """Stop taking commands, finish in-flight calls, close channels, say offline."""
        timeout = self.settings.bridge.shutdown_timeout
        log.info("shutting down")
        if self.cluster is not None:  # hand the keys over first (docs/scale-out.md)
            await self.cluster.leave(timeout)
        await self.dispatcher.close(timeout)
        for feature in self.features:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(feature.aclose(), timeout)
        offline = self.cluster.finish() if self.cluster is not None else True
        await self.link.close(grace=min(5.0, timeout), offline=offline)


def _disabled_services(settings: Settings) -> dict[str, str]:
    """Why each upstream service that does not run is off, for `service_disabled` answers."""
    reasons = {"ivh": settings.ivh.disabled_reason, "desk": settings.desk.disabled_reason}
    return {name: why for name, why in reasons.items() if why is not None}


async def _supervised(name: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run a long-lived task; log and restart it if it fails, so one bug never stops the bridge."""
    while True:
        try:
            await run()
            return
        except Exception:
            log.exception("task %s failed; restarting in 1 s", name)
            await asyncio.sleep(1.0)


def release_bound(settings: Settings) -> float:
    """How long a live previous owner may take to release a moved key: the features' release
    lets queued drives and streams go out for up to a request timeout, then closes the IVH
    channels (5 s at most), docs/scale-out.md "Moves"."""
    return max(settings.ivh.request_timeout, settings.desk.request_timeout) + 5.0

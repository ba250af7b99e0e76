"""Prometheus metrics on `prometheus_client`: it escapes label values and speaks both the text
format and OpenMetrics. Each bridge has its own `CollectorRegistry` (tests run several in one
process). Every label value is bounded: an action, service or outcome the bridge does not know
(any MQTT client can publish to `<base>/bridge/request/<anything>`) counts as `unknown`, so the
page cannot grow with what clients send."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from bridge.ops.readout import Readout

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNKNOWN = "unknown"
PREFIX = "tencent2mqtt"


class CallLike(Protocol):
    """What the Tencent clients report per logical call."""

    @property
    def service(self) -> str: ...
    @property
    def api(self) -> str: ...
    @property
    def elapsed(self) -> float: ...
    @property
    def outcome(self) -> str: ...
    @property
    def retries(self) -> int: ...


def bounded(value: str, known: Collection[str]) -> str:
    """`value` if it is one the bridge knows, else `unknown`."""
    return value if value in known else UNKNOWN


class Metrics:
    """Upstream call counters (fed by the clients) and live values read from the running app."""

    def __init__(
        self,
        *,
        actions: Collection[str],
        services: Collection[str],
        outcomes: Collection[str],
    ) -> None:
        self._actions = frozenset(actions)
        self._services = frozenset(services)
        self._outcomes = frozenset({"ok", *outcomes})
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("service", "api")
        self._calls = Counter(
            f"{PREFIX}_upstream_calls",
            "Upstream API calls by outcome",
            (*labels, "outcome"),
            registry=self.registry,
        )
        self._retries = Counter(
            f"{PREFIX}_upstream_retries", "Upstream retries", labels, registry=self.registry
        )
        self._series: dict[tuple[str, str, str], tuple[Counter, Counter, Histogram]] = {}
        self._latency = Histogram(
            f"{PREFIX}_upstream_latency_seconds",
            "Upstream call latency",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )

    def bind(self, readout: Readout) -> None:
        """Read the live values from `readout` on every scrape."""
        self.registry.register(
            LiveCollector(readout=readout, actions=self._actions, outcomes=self._outcomes)
        )

    def observe_call(self, record: CallLike) -> None:
        """Record one upstream call (the clients' observer hook)."""
        service = bounded(record.service, self._services)
        outcome = bounded(record.outcome, self._outcomes)
        calls, retries, latency = self._children(service, record.api, outcome)
        calls.inc()
        if record.retries:
            retries.inc(record.retries)
        latency.observe(record.elapsed)

    def _children(self, service: str, api: str, outcome: str) -> tuple[Counter, Counter, Histogram]:
        """The labelled series of one call kind, looked up once: `labels()` takes a lock and
        builds its key on every use. Bounded like the labels themselves."""
        key = (service, api, outcome)
        children = self._series.get(key)
        if children is None:
            children = (
                self._calls.labels(service, api, outcome),
                self._retries.labels(service, api),
                self._latency.labels(service, api),
            )
            self._series[key] = children
        return children

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition in the format `accept` asks for (text 0.0.4 by default), and its
        content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class LiveCollector:
    """Values read from the app at scrape time: action outcomes, MQTT, service gauges."""

    def __init__(
        self, *, readout: Readout, actions: frozenset[str], outcomes: frozenset[str]
    ) -> None:
        self._readout = readout
        self._actions = actions
        self._outcomes = outcomes

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families depend on the services enabled."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One scrape's families."""
        snapshot = self._readout.snapshot()
        mqtt = snapshot["mqtt"]
        yield self._actions_family()
        yield _gauge("mqtt_connected", "1 when connected", int(mqtt["connected"]))
        reconnects = CounterMetricFamily(f"{PREFIX}_mqtt_reconnects", "MQTT reconnects")
        reconnects.add_metric([], mqtt["reconnects"])
        yield reconnects
        yield _gauge("mqtt_outbox_depth", "Messages waiting to publish", mqtt["outbox_depth"])
        yield _gauge("actions_inflight", "Actions running", snapshot["actions_inflight"])
        for name in self._readout.services():
            for key, value in snapshot.get(name, {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    yield _gauge(f"{name}_{key}", f"{name} {key}", value)

    def _actions_family(self) -> Metric:
        family = CounterMetricFamily(
            f"{PREFIX}_actions",
            "Actions handled, by action and outcome",
            labels=("action", "outcome"),
        )
        totals: dict[tuple[str, str], float] = {}
        for (action, outcome), n in self._readout.outcomes().items():
            key = (bounded(action, self._actions), bounded(outcome, self._outcomes))
            totals[key] = totals.get(key, 0.0) + n
        for labels, total in sorted(totals.items()):
            family.add_metric(list(labels), total)
        return family


def _gauge(name: str, help_text: str, value: float) -> Metric:
    return GaugeMetricFamily(f"{PREFIX}_{name}", help_text, value=value)

"""Prometheus metrics (text exposition format 0.0.4), rendered from live counters."""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Protocol

from bridge.ops.readout import Readout

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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


class Histogram:
    """A cumulative-bucket latency histogram."""

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        """Add one observation in seconds."""
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        """Exposition lines for this histogram."""
        out, running = [], 0
        for bound, count in zip((*BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{{labels},le="{le}"}} {running}')
        out.append(f"{name}_sum{{{labels}}} {self.total:.6f}")
        out.append(f"{name}_count{{{labels}}} {self.n}")
        return out


class Metrics:
    """Counters fed by the clients and read from the app's live state."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self.retries: Counter[tuple[str, str]] = Counter()
        self.latency: dict[tuple[str, str], Histogram] = {}
        self._readout: Readout | None = None

    def bind(self, readout: Readout) -> None:
        """Read gauges from `readout` when rendering."""
        self._readout = readout

    def observe_call(self, record: CallLike) -> None:
        """Record one upstream call (the clients' observer hook)."""
        self.calls[(record.service, record.api, record.outcome)] += 1
        self.retries[(record.service, record.api)] += record.retries
        key = (record.service, record.api)
        self.latency.setdefault(key, Histogram()).observe(record.elapsed)

    def render(self) -> str:
        """The whole exposition."""
        lines: list[str] = []
        lines += _counter(
            "tencent2mqtt_upstream_calls_total",
            "Upstream API calls by outcome",
            {f'service="{s}",api="{a}",outcome="{o}"': n for (s, a, o), n in self.calls.items()},
        )
        lines += _counter(
            "tencent2mqtt_upstream_retries_total",
            "Upstream retries",
            {f'service="{s}",api="{a}"': n for (s, a), n in self.retries.items()},
        )
        lines += ["# HELP tencent2mqtt_upstream_latency_seconds Upstream call latency"]
        lines += ["# TYPE tencent2mqtt_upstream_latency_seconds histogram"]
        for (s, a), hist in sorted(self.latency.items()):
            lines += hist.lines("tencent2mqtt_upstream_latency_seconds", f'service="{s}",api="{a}"')
        if self._readout is not None:
            lines += _live_lines(self._readout)
        return "\n".join(lines) + "\n"


def _counter(name: str, help_text: str, values: dict[str, int]) -> list[str]:
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    out += [
        f"{name}{{{labels}}} {n}" if labels else f"{name} {n}"
        for labels, n in sorted(values.items())
    ]
    return out


def _gauge(name: str, help_text: str, value: float, labels: str = "") -> list[str]:
    label = f"{{{labels}}}" if labels else ""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{label} {value}"]


def _live_lines(readout: Readout) -> list[str]:
    snapshot = readout.snapshot()
    mqtt = snapshot["mqtt"]
    lines = _counter(
        "tencent2mqtt_actions_total",
        "Actions handled, by action and outcome",
        {f'action="{a}",outcome="{o}"': n for (a, o), n in readout.outcomes().items()},
    )
    lines += _gauge("tencent2mqtt_mqtt_connected", "1 when connected", int(mqtt["connected"]))
    lines += _counter(
        "tencent2mqtt_mqtt_reconnects_total", "MQTT reconnects", {"": mqtt["reconnects"]}
    )
    lines += _gauge(
        "tencent2mqtt_mqtt_outbox_depth", "Messages waiting to publish", mqtt["outbox_depth"]
    )
    lines += _gauge(
        "tencent2mqtt_actions_inflight", "Actions running", snapshot["actions_inflight"]
    )
    for name in readout.services():
        for key, value in snapshot.get(name, {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                lines += _gauge(f"tencent2mqtt_{name}_{key}", f"{name} {key}", value)
    return lines

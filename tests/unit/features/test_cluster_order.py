"""Which messages keep their place in an overloaded line (docs/scale-out.md): the membership's
documents, wills and releases, not requests, states or forwarded callbacks."""

from __future__ import annotations

from bridge.app import App
from bridge.config import Settings
from bridge.core.inbound import Inbound


def _app(clustered: bool) -> App:
    settings = Settings.model_validate(
        {
            "mqtt": {"url": "mqtt://127.0.0.1:1", "base_topic": "t"},
            "cluster": {"enabled": clustered, "instance_id": "b0"},
            "ivh": {"enabled": False},
            "desk": {"enabled": False},
        }
    )
    return App(settings)


def test_membership_messages_keep_their_place_in_a_cluster_only() -> None:
    def msg(topic: str) -> Inbound:
        return Inbound(topic=topic, payload=b"{}", retain=False, qos=1)

    keeps = [
        "t/bridge/state",
        "t/bridge/instances/b1",
        "t/bridge/release/b2",
    ]
    waits_like_any = [
        "t/bridge/request/ivh/send_text",
        "t/ivh/s1/state",
        "t/bridge/forward/desk/s1",
        "t/bridge/instances/b1/extra",
    ]
    app = _app(clustered=True)
    assert [app.keeps_order(msg(t)) for t in keeps] == [True] * len(keeps)
    assert [app.keeps_order(msg(t)) for t in waits_like_any] == [False] * len(waits_like_any)
    alone = _app(clustered=False)
    assert not any(alone.keeps_order(msg(t)) for t in keeps)

"""The callback receiver's pure logic: checks, de-duplication, event naming, snake_case."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from bridge.config import ConfigError, Settings, config_warnings, load_settings
from bridge.features.desk.callbacks import (
    ANSWERS_FIRST,
    COMMAND,
    OK,
    CallbackReceiver,
    Notification,
    RecentIds,
    notification,
    snake,
)
from bridge.features.desk.feature import _same_change

QUERY = {"SdkAppid": "1400000001", "CallbackCommand": COMMAND, "RequestID": "r1"}


def _body(**extra: Any) -> bytes:
    body = {"CallbackCommand": COMMAND, "SessionId": "s1", "Event": "ChatBot.UserSendMsg"}
    return json.dumps({**body, **extra}).encode()


def _receiver(got: list[Notification], size: int = 10) -> CallbackReceiver:
    return CallbackReceiver(sdkappid=1400000001, on_event=got.append, queue_size=size)


def test_snake_case_names() -> None:
    assert [snake(n) for n in ("SessionId", "MsgBody", "ClientIP", "EventTime", "AgentId")] == [
        "session_id",
        "msg_body",
        "client_ip",
        "event_time",
        "agent_id",
    ]


def test_a_user_message_carries_its_text_time_and_raw() -> None:
    body = json.loads(
        _body(
            EventTime=1700000000123,
            MsgBody=[
                {"MsgType": "TIMTextElem", "MsgContent": {"Text": "hello"}},
                {"MsgType": "TIMFaceElem", "MsgContent": {"Index": 1}},
            ],
        )
    )
    note = notification(body)
    assert note is not None and note.event_type == "user_message" and note.state is None
    assert note.data["text"] == "hello" and note.data["time"] == "2023-11-14T22:13:20.123Z"
    assert note.data["msg_body"][0]["msg_content"] == {"text": "hello"}
    assert note.data["raw"] == body and note.data["event"] == "ChatBot.UserSendMsg"
    assert note.data["callback_command"] == COMMAND  # every body field, in snake_case
    assert {snake(k) for k in body} <= set(note.data)


@pytest.mark.parametrize(
    ("event", "kind", "state", "confirm"),
    [
        ("SessionBegin", "session_begin", None, True),  # a session may begin in the queue
        ("ChatBot.RobotSendMsg", "bot_message", None, False),
        ("Staff.StaffSendMsg", "agent_message", None, False),
        ("Transfer.Start", "transfer_started", "queuing", False),
        ("transfer.success", "transfer_succeeded", None, True),  # Agent or WaitingForAgent...
        ("Transfer.Fail", "transfer_failed", "chatbot", False),
        ("Staff.Change", "agent_changed", None, True),
        ("SessionEnd", "session_closed", "ended", False),
        ("User.Timeout", "user_timeout", None, False),
        ("Something.New", "callback", None, False),
    ],
)
def test_event_names_and_implied_states(
    event: str, kind: str, state: str | None, confirm: bool
) -> None:
    note = notification({"SessionId": "s", "Event": event, "AgentId": "a", "EventTime": 5})
    assert note is not None and (note.event_type, note.state, note.confirm) == (
        kind,
        state,
        confirm,
    )
    assert note.data["event"] == event and note.event_time == 5


def test_a_time_no_date_holds_is_no_time() -> None:
    for stamp in (10**17, -1, True):
        note = notification({"SessionId": "s", "Event": "User.Timeout", "EventTime": stamp})
        assert note is not None and note.data["time"] is None and note.event_time is None


def test_a_body_without_session_is_not_a_notification() -> None:
    assert notification({"Event": "SessionBegin"}) is None
    assert notification({"SessionId": "", "Event": "SessionBegin"}) is None
    assert notification({"SessionId": "a/b", "Event": "SessionBegin"}) is None  # no topic
    assert notification({"SessionId": 7, "Event": "SessionBegin"}) is None


def test_recent_ids_are_bounded() -> None:
    ids = RecentIds(capacity=3)
    assert all(ids.add(f"r{i}") for i in range(5))
    assert not ids.add("r4") and ids.add("r0")  # r0 fell out: bounded memory


async def test_checks_in_order_and_nothing_queued_on_refusal() -> None:
    got: list[Notification] = []
    rec = _receiver(got)
    assert rec.accept({**QUERY, "SdkAppid": "1"}, _body())[0] == 403
    assert rec.accept({**QUERY, "CallbackCommand": "X"}, _body())[0] == 400
    assert rec.accept(QUERY, None)[0] == 413
    assert rec.accept(QUERY, b"[1]")[0] == 400
    assert rec.accept(QUERY, b"{nope")[0] == 400
    deep = b'{"SessionId": "s1", "x": ' + b"[" * 900 + b"]" * 900 + b"}"
    assert rec.accept(QUERY, deep)[0] == 400  # refused whole, not a recursion error later
    assert rec.accept(QUERY, b"[" * 30_000)[0] == 400
    assert rec.depth == 0 and rec.counts["refused"] == 7


async def test_one_publication_per_request_id() -> None:
    got: list[Notification] = []
    rec = _receiver(got)
    assert rec.accept(QUERY, _body()) == (200, OK)
    assert rec.accept(QUERY, _body()) == (200, OK)  # the retry is answered OK ...
    assert rec.accept({**QUERY, "RequestID": "r2"}, _body()) == (200, OK)
    task = asyncio.create_task(rec.run())
    await asyncio.sleep(0.01)
    task.cancel()
    assert len(got) == 2 and rec.counts["duplicates"] == 1  # ... and not published again


async def test_without_request_id_the_same_body_is_the_same_event() -> None:
    rec = _receiver([])
    query = {k: v for k, v in QUERY.items() if k != "RequestID"}
    rec.accept(query, _body())
    rec.accept(query, _body())
    rec.accept(query, _body(EventTime=2))
    assert rec.depth == 2


async def test_a_full_queue_refuses_and_lets_the_retry_in() -> None:
    rec = _receiver([], size=1)
    assert rec.accept(QUERY, _body())[0] == 200
    assert rec.accept({**QUERY, "RequestID": "r2"}, _body())[0] == 503
    rec._queue.get_nowait()  # noqa: SLF001 (drain the full queue)
    assert rec.accept({**QUERY, "RequestID": "r2"}, _body())[0] == 200


def test_polling_and_callback_see_one_change() -> None:
    assert _same_change(("agent", "Agent", "a1"), ("agent", None, "a1"))
    assert _same_change(("agent", None, "a1"), ("agent", "Agent", "a1"))
    assert not _same_change(("agent", None, "a1"), ("agent", None, "a2"))
    assert not _same_change(("queuing", "Queueing", None), ("queuing", "Queuing", None))
    assert not _same_change(None, ("agent", None, "a1"))


def test_callback_path_is_a_secret_everywhere(tmp_path: Any) -> None:
    path = "/desk/callback/0123456789abcdefghij"
    settings = Settings(desk={"callback": path})
    assert path in settings.secrets()
    assert path not in json.dumps(settings.redacted())
    assert "desk.callback is set but http.listen is not" in " ".join(config_warnings(settings))
    quiet = Settings(desk={"callback": path}, http={"listen": "127.0.0.1:9100"})
    assert not [w for w in config_warnings(quiet) if "desk.callback" in w]


@pytest.mark.parametrize("bad", ["relative/xyz", "/a b", "/x?y=1", "/healthz", "/{sid}"])
def test_a_bad_callback_path_is_refused_naming_the_key(tmp_path: Any, bad: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[desk]\ncallback = "{bad}"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config)
    assert any(p.startswith("desk.callback") for p in err.value.problems)
    assert bad not in str(err.value) or bad == "/healthz"  # the value is never echoed


def test_the_emulator_and_the_bridge_name_events_alike() -> None:
    """Every name the emulator sends is one the bridge types, except its generic state move."""
    from bridge.emulator.desk_callbacks import EVENTS

    for key, name in EVENTS.items():
        note = notification({"SessionId": "s", "Event": name})
        assert note is not None
        assert (note.event_type == "callback") == (key == "other_state"), (key, name)


async def test_a_sender_gone_mid_body_is_neither_answered_nor_queued() -> None:
    rec = _receiver([])
    messages = [{"type": "http.request", "body": _body()[:10], "more_body": True}]
    messages.append({"type": "http.disconnect"})
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "query_string": b"RequestID=r1", "headers": []}
    await rec.endpoint(scope, receive, send)
    assert sent == [] and rec.depth == 0 and rec.counts["accepted"] == 0


async def test_publications_give_way_to_new_posts_for_a_bounded_time() -> None:
    got: list[Notification] = []
    rec = _receiver(got, size=1000)
    task = asyncio.create_task(rec.run())
    rec.accept(QUERY, _body())
    await asyncio.sleep(0)
    assert len(got) == 1  # nothing else arriving: published at once
    for i in range(10):  # a burst: a new POST in every loop pass
        rec.accept({**QUERY, "RequestID": f"b{i}"}, _body())
        await asyncio.sleep(0)
    assert len(got) == 1  # while POSTs keep coming, publications wait
    for i in range(ANSWERS_FIRST + 5):  # a burst that does not end
        rec.accept({**QUERY, "RequestID": f"c{i}"}, _body())
        await asyncio.sleep(0)
    assert len(got) > 1  # and yet published: giving way is bounded
    await asyncio.sleep(0.05)
    task.cancel()
    assert len(got) == 1 + 10 + ANSWERS_FIRST + 5


async def test_a_notification_that_fails_to_publish_is_counted_and_the_rest_go_on() -> None:
    got: list[Notification] = []

    def on_event(note: Notification) -> None:
        if note.session_id == "bad":
            raise RuntimeError("a broken publisher")
        got.append(note)

    rec = CallbackReceiver(sdkappid=1400000001, on_event=on_event)
    task = asyncio.create_task(rec.run())
    rec.accept(QUERY, json.dumps({"SessionId": "bad", "Event": "X"}).encode())
    rec.accept({**QUERY, "RequestID": "r2"}, _body())
    await asyncio.sleep(0.05)
    assert not task.done() and [n.session_id for n in got] == ["s1"]
    assert rec.counts["failed"] == 1
    task.cancel()

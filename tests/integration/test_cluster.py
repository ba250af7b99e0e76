"""Scale-out (docs/scale-out.md): three real bridge processes, a real mosquitto, the emulator.

Each test starts the three instances b0, b1, b2 with `cluster.enabled`, a 2 s keepalive and a
0.5 s settle, and checks what the emulator saw (calls, sockets per session) and what the broker
carried (documents, answers, events)."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from bridge.cli.demo.tone import tone_pcm, wav_of
from bridge.emulator import Emulator
from tests.support.broker import Broker, free_port
from tests.support.cloud import Admin, emulator
from tests.support.cluster import (
    KEEPALIVE,
    Cluster,
    active,
    all_active,
    calls,
    docs,
    owner_of,
    socket_stats,
    until,
)
from tests.support.mqtt_probe import Probe, response_properties
from tests.support.request_cli import cli

NAMES = ["b0", "b1", "b2"]


class Running:
    """The emulator, its admin client, the cluster and a probe, for one test."""

    def __init__(self, emu: Emulator, admin: Admin, cluster: Cluster, probe: Probe) -> None:
        self.emu, self.admin, self.cluster, self.probe = emu, admin, cluster, probe

    async def sessions(self, count: int) -> list[str]:
        """`count` IVH sessions, in progress and started, each with its channel connected."""
        body = await self.admin.call("POST", "/ivh/sessions", {"count": count})
        sids = list(body["session_ids"])
        await until(
            lambda: all(self.emu.state.channels.get(s) is not None for s in sids),
            20,
            f"{count} channels",
        )
        return sids


@pytest.fixture
async def running(broker: Broker, base: str, tmp_path: Path) -> AsyncIterator[Running]:
    async with emulator() as emu, Admin(emu) as admin, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path)
        async with cluster.up(probe):
            yield Running(emu, admin, cluster, probe)


def _channels_by_owner(sids: list[str], names: list[str]) -> Counter[str]:
    return Counter(owner_of(s, names) for s in sids)


async def test_membership_documents_wills_and_the_last_offline(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    async with emulator() as emu, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path)
        async with cluster.up(probe):
            for name, doc in docs(probe).items():
                assert set(doc) == {"state", "version", "started_at", "owns"}, (name, doc)
            health = await probe.request("bridge/health_check")
            assert set(health["data"]["cluster"]["live"]) == set(NAMES), health
            assert health["data"]["cluster"]["instance_id"] in NAMES
            info = probe.on("bridge/info")[-1]
            assert info["cluster"]["instance_id"] in NAMES
            mark = len(probe.messages)
            cluster.signal("b2", signal.SIGKILL)
            will = await probe.wait_json(
                "bridge/state", lambda s: s.get("instance") == "b2", 2 * KEEPALIVE
            )
            assert will == {"state": "offline", "reason": "connection_lost", "instance": "b2"}
            await until(lambda: "b2" not in docs(probe), 5, "b2's document cleared")
            await probe.wait_for(
                lambda m: m.topic == f"{base}/bridge/state" and m.json() == {"state": "online"},
                5,
                start=mark,
            )
            assert (await probe.request("bridge/health_check"))["status"] == "ok"
            assert await cluster.terminate("b1") == 0
            await until(lambda: "b1" not in docs(probe), 5, "b1's document cleared")
            assert probe.on("bridge/state")[-1] == {"state": "online"}  # b0 is still active
            assert await cluster.terminate("b0") == 0
            await until(lambda: not docs(probe), 5, "every document cleared")
            await probe.wait_json("bridge/state", lambda s: s["state"] == "offline")
            assert probe.on("bridge/state")[-1] == {"state": "offline", "reason": "shutdown"}


async def test_24_sessions_get_24_sockets_spread_over_all_three(running: Running) -> None:
    sids = await running.sessions(24)
    await asyncio.sleep(1.0)  # nothing more happens: no second socket, no reconnect
    stats = socket_stats(running.emu)
    assert sorted(running.emu.state.channels) == sorted(sids)
    for sid in sids:
        assert stats[sid].get("opened") == 1, (sid, stats[sid], running.cluster.logs())
        assert not stats[sid].get("refused_busy"), (sid, stats[sid])
    spread = _channels_by_owner(sids, NAMES)
    assert set(spread) == set(NAMES), spread
    await until(lambda: sum(d["owns"] for d in docs(running.probe).values()) == 24, 5, "owns == 24")
    owns = {name: doc["owns"] for name, doc in docs(running.probe).items()}
    assert owns == dict(spread), owns


async def test_300_mixed_requests_get_300_answers_and_300_upstream_calls(
    running: Running, broker: Broker, base: str
) -> None:
    sids = await running.sessions(6)
    desk_sid = await running.admin.desk_session(state="chatbot")
    before = calls(running.emu, "statsession") + calls(running.emu, "get_session_state")
    reply_topic = f"{base}/bridge/client/t-{uuid.uuid4().hex[:6]}/response"
    answers: list[dict[str, Any]] = []
    async with (
        aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V311) as old,
        aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as new,
    ):
        await old.subscribe(f"{base}/bridge/response/#", qos=1)
        await new.subscribe(reply_topic, qos=1)
        collect = [
            asyncio.create_task(_collect(old, answers)),
            asyncio.create_task(_collect(new, answers)),
        ]
        for i in range(300):
            sid = sids[i % len(sids)]
            action, body = (
                ("desk/get_session_state", {"session_id": desk_sid})
                if i % 5 == 0
                else ("ivh/get_session", {"session_id": sid})
            )
            topic = f"{base}/bridge/request/{action}"
            if i % 2:  # MQTT 5 with a Response Topic and Correlation Data
                props = response_properties(reply_topic, f"c{i}".encode())
                await new.publish(topic, json.dumps(body), qos=1, properties=props)
            else:  # MQTT 3.1.1 with a transaction
                await old.publish(topic, json.dumps({**body, "transaction": f"t{i}"}), qos=1)
        await until(lambda: len(answers) >= 300, 20, "300 answers")
        await asyncio.sleep(0.5)  # and not one more
        for task in collect:
            task.cancel()
    keys = Counter(a["key"] for a in answers)
    assert len(answers) == 300 and len(keys) == 300, keys.most_common(3)
    assert all(a["status"] == "ok" for a in answers), [a for a in answers if a["status"] != "ok"]
    after = calls(running.emu, "statsession") + calls(running.emu, "get_session_state")
    assert after - before == 300


async def _collect(client: aiomqtt.Client, into: list[dict[str, Any]]) -> None:
    async for msg in client.messages:
        body = json.loads(bytes(msg.payload))
        corr = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        key = body.get("transaction") or (corr.decode() if corr else None)
        into.append({"key": key, "status": body.get("status")})


async def test_bad_input_gets_one_answer_from_one_instance(running: Running) -> None:
    probe = running.probe
    mark = len(probe.messages)
    await probe.publish("bridge/request/ivh/get_session", b"{not json")
    await probe.publish("bridge/request/ivh/nope", {"transaction": "u1"})
    await probe.publish("ivh/bad%20id/text", b"hello")
    await asyncio.sleep(1.5)
    responses = [m.json() for m in probe.messages[mark:] if "/bridge/response/" in m.topic]
    codes = Counter(r["error"]["code"] for r in responses)
    assert codes == {"invalid_json": 1, "unknown_action": 1, "invalid_session_id": 1}, responses


async def test_desk_watch_is_polled_once_per_interval_with_one_event_per_change(
    running: Running,
) -> None:
    sid = await running.admin.desk_session(state="chatbot")
    watched = await running.probe.request("desk/watch", {"session_id": sid, "interval": 0.5})
    assert watched["status"] == "ok", watched
    await running.probe.wait_json(f"desk/{sid}/state", lambda s: s.get("state") == "chatbot")
    start = _desk_polls(running.emu, sid)
    await asyncio.sleep(3.0)
    polls = _desk_polls(running.emu, sid) - start
    assert 4 <= polls <= 8, polls  # ~6 at 0.5 s: one instance polls, not three
    await running.admin.desk_state(sid, "agent", agent_id="a1")
    await running.probe.wait_json(f"desk/{sid}/state", lambda s: s.get("state") == "agent")
    await asyncio.sleep(1.5)
    events = [e for e in running.probe.on(f"desk/{sid}/event") if e["type"] == "state_changed"]
    assert [e["after"] for e in events] == ["chatbot", "agent"], events


async def test_a_sessions_stream_max_interval_reaches_its_owner(running: Running) -> None:
    """`ivh/create_session` runs on the owner of its action name; the session's own owner, which
    drives it, learns the StreamMaxInterval it was given from the retained state."""
    probe = running.probe
    creator = owner_of("ivh/create_session", NAMES)
    for user in range(12):  # a session owned by another instance than its creator
        created = await probe.request(
            "ivh/create_session",
            {
                "virtualman_project_id": "proj-1",
                "user_id": f"kiosk-{user}",
                "protocol": "webrtc",
                "driver_type": 1,
                "stream_max_interval": 4000,
            },
        )
        assert created["status"] == "ok", created
        sid = str(created["session_id"])
        if owner_of(sid, NAMES) != creator:
            break
    assert owner_of(sid, NAMES) != creator
    state = await probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "in_progress")
    assert state["stream_max_interval"] == 4000
    assert (await probe.request("ivh/start_session", {"session_id": sid}))["status"] == "ok"
    await until(lambda: running.emu.state.channels.get(sid) is not None, 10, "its channel")
    first = await probe.request("ivh/stream_text", {"session_id": sid, "text": "One, "})
    await asyncio.sleep(2.3)  # past the default 2 s, within the session's 4 s
    later = await probe.request("ivh/stream_text", {"session_id": sid, "text": "two."})
    assert later["data"]["req_id"] == first["data"]["req_id"], (first, later)
    assert later["data"]["seq"] == 2


async def test_a_large_json_audio_request_is_run_by_the_sessions_owner(running: Running) -> None:
    """A 3 s WAV as base64 JSON is over `bridge.max_payload`, within the audio limit: it is
    keyed by its session like a small one, so no other instance opens a second socket."""
    probe = running.probe
    by_action = owner_of("ivh/send_audio", NAMES)
    for user in range(12):
        created = await probe.request(
            "ivh/create_session",
            {"virtualman_project_id": "p", "user_id": f"voice-{user}", "driver_type": 3},
        )
        sid = str(created["session_id"])
        if owner_of(sid, NAMES) != by_action:
            break
    assert owner_of(sid, NAMES) != by_action
    await probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "in_progress")
    assert (await probe.request("ivh/start_session", {"session_id": sid}))["status"] == "ok"
    await probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "connected", 10)
    audio = base64.b64encode(wav_of(tone_pcm(3.0))).decode()
    assert len(audio) > 65536
    done = await probe.request("ivh/send_audio", {"session_id": sid, "audio": audio}, 20)
    assert done["status"] == "ok", done
    assert done["data"]["duration_ms"] == 3000
    stats = socket_stats(running.emu)[sid]
    assert stats.get("opened") == 1 and not stats.get("refused_busy"), stats


async def test_a_graceful_move_publishes_no_speak_status_twice(running: Running) -> None:
    """After a move the cloud re-sends the last drives' speak statuses to the new owner's
    socket (docs/protocol.md A.4); the old owner's release hands their keys over."""
    probe = running.probe
    [sid] = await running.sessions(1)
    said = await probe.request("ivh/send_text", {"session_id": sid, "text": "hello"})
    assert said["status"] == "ok", said
    req_id = said["data"]["req_id"]

    def statuses() -> list[tuple[object, ...]]:
        return [
            (e["data"].get("req_id"), e["data"].get("speak_status"), e["data"].get("seq"))
            for e in probe.on(f"ivh/{sid}/event")
            if e["type"] == "speak_status"
        ]

    await until(lambda: (req_id, "TextOver") in [s[:2] for s in statuses()], 10, "TextOver")
    opened = socket_stats(running.emu)[sid]["opened"]
    assert await running.cluster.terminate(owner_of(sid, NAMES)) == 0
    await until(lambda: socket_stats(running.emu)[sid]["opened"] > opened, 15, "a new socket")
    await asyncio.sleep(1.0)  # the re-sent frames have come
    seen = statuses()
    assert len(seen) == len(set(seen)), seen


async def test_a_graceful_move_with_drives_queued_opens_no_second_socket(
    running: Running,
) -> None:
    """Five texts paced a second apart outlast `cluster.settle`: the new owner waits for the
    old owner's release (it lets them out first) instead of being refused a second socket."""
    probe = running.probe
    [sid] = await running.sessions(1)
    sent = []
    for i in range(5):
        tx = uuid.uuid4().hex
        sent.append(tx)
        body = {"session_id": sid, "text": f"t{i}", "transaction": tx}
        await probe.publish("bridge/request/ivh/send_text", body)
    await asyncio.sleep(0.3)
    assert await running.cluster.terminate(owner_of(sid, NAMES)) == 0
    after = await probe.request("ivh/send_text", {"session_id": sid, "text": "after"}, 20)
    assert after["status"] == "ok", after
    answers = [m.json() for m in probe.messages if m.topic.endswith("/response/ivh/send_text")]
    assert sorted(a["transaction"] for a in answers if a["transaction"] in sent) == sorted(sent)
    assert all(a["status"] == "ok" for a in answers), answers
    stats = socket_stats(running.emu)[sid]
    assert stats.get("opened") == 2 and not stats.get("refused_busy"), stats


async def test_a_sessions_events_count_one_seq_whoever_saw_each_change(
    running: Running,
) -> None:
    """Created by one instance, polled by another, driven by its owner, a third: every event
    of the session comes from its owner, `seq` 1, 2, 3, ... without a repeat or a gap."""
    probe = running.probe
    creator, poller = owner_of("ivh/create_session", NAMES), owner_of("ivh/poll", NAMES)
    for user in range(30):
        created = await probe.request(
            "ivh/create_session",
            {"virtualman_project_id": "p", "user_id": f"seq-{user}", "driver_type": 1},
        )
        sid = str(created["session_id"])
        if owner_of(sid, NAMES) not in (creator, poller):
            break
    assert owner_of(sid, NAMES) not in (creator, poller)
    await probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "in_progress")
    assert (await probe.request("ivh/start_session", {"session_id": sid}))["status"] == "ok"
    await probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "connected", 10)
    said = await probe.request("ivh/send_text", {"session_id": sid, "text": "hello"})
    await probe.wait_json(
        f"ivh/{sid}/event", lambda e: e["data"].get("speak_status") == "TextOver", 10
    )
    assert (await probe.request("ivh/close_session", {"session_id": sid}))["status"] == "ok"
    await probe.wait_json(f"ivh/{sid}/event", lambda e: e["type"] == "session_closed", 10)
    await asyncio.sleep(1.0)  # the poll owner's listing without it, the closing frames
    events = probe.on(f"ivh/{sid}/event")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), [
        (e["seq"], e["type"]) for e in events
    ]
    types = [e["type"] for e in events]
    assert types[:3] == ["status_changed", "status_changed", "session_started"], types
    assert types.count("session_closed") == 1 and said["status"] == "ok"


async def test_a_text_stream_open_at_a_graceful_move_is_ended_by_the_old_owner(
    running: Running,
) -> None:
    """The old owner ends the open utterance (`IsFinal`, A.5) before it closes the socket;
    the next chunk starts a new utterance under the new owner."""
    probe = running.probe
    [sid] = await running.sessions(1)
    first = await probe.request("ivh/stream_text", {"session_id": sid, "text": "One, "})
    assert first["status"] == "ok", first
    req_id = first["data"]["req_id"]
    assert await running.cluster.terminate(owner_of(sid, NAMES)) == 0
    sent = [
        e["frame"]["Payload"]
        for e in running.emu.state.journal.entries(kind="ws_in", session_id=sid, limit=10_000)
        if isinstance(e.get("frame"), dict) and e["frame"].get("Payload", {}).get("ReqId") == req_id
    ]
    assert [(p["Data"]["Seq"], p["Data"]["IsFinal"]) for p in sent] == [(1, False), (2, True)]
    later = await probe.request("ivh/stream_text", {"session_id": sid, "text": "two."}, 20)
    assert later["status"] == "ok" and later["data"]["req_id"] != req_id
    assert later["data"]["seq"] == 1


async def test_live_audio_at_a_graceful_move_is_ended_by_the_old_owner(running: Running) -> None:
    probe = running.probe
    body = await running.admin.call("POST", "/ivh/sessions", {"count": 1, "driver_type": 3})
    [sid] = body["session_ids"]
    await until(lambda: running.emu.state.channels.get(sid) is not None, 20, "its channel")
    await probe.publish(f"ivh/{sid}/audio", tone_pcm(0.5))  # a live piece, no end yet
    await until(lambda: bool(_audio_frames(running.emu, sid)), 5, "the first packets")
    assert await running.cluster.terminate(owner_of(sid, NAMES)) == 0
    frames = _audio_frames(running.emu, sid)
    assert frames[-1]["IsFinal"] is True and not any(f["IsFinal"] for f in frames[:-1])
    assert [f["Seq"] for f in frames] == list(range(1, len(frames) + 1))


def _audio_frames(emu: Emulator, sid: str) -> list[dict[str, Any]]:
    entries = emu.state.journal.entries(kind="ws_in", session_id=sid, limit=10_000)
    payloads = [e["frame"].get("Payload", {}) for e in entries if isinstance(e.get("frame"), dict)]
    return [p["Data"] for p in payloads if p.get("Command") == "SEND_AUDIO"]


async def test_an_ended_desk_session_is_cleared_once_and_forgotten_by_all(
    running: Running,
) -> None:
    probe = running.probe
    sid = await running.admin.desk_session(state="chatbot")
    assert (await probe.request("desk/watch", {"session_id": sid, "interval": 0.3}))[
        "status"
    ] == "ok"
    await probe.wait_json(f"desk/{sid}/state", lambda s: s.get("state") == "chatbot")
    await running.admin.end_desk(sid)
    await probe.wait_json(f"desk/{sid}/state", lambda s: s.get("state") == "ended")
    topic = f"{probe.base}/desk/{sid}/state"
    await probe.wait_for(lambda m: m.topic == topic and not m.payload, 10)
    await asyncio.sleep(1.5)  # nobody publishes it again, nobody clears it twice
    states = [m.payload for m in probe.messages if m.topic == topic]
    assert states[-1] == b"" and states.count(b"") == 1, states
    # The others forgot it too: the instance that takes it over has nothing left to clear.
    assert await running.cluster.terminate(owner_of(sid, NAMES)) == 0
    await until(lambda: len(active(probe)) == 2, 10, "two instances active")
    await asyncio.sleep(1.5)
    states = [m.payload for m in probe.messages if m.topic == topic]
    assert states.count(b"") == 1, states
    # Whichever instance answers, it has forgotten the session: it is found gone anew.
    seen = len(probe.messages)
    gone = await probe.request("desk/get_session_state", {"session_id": sid})
    assert gone["error"]["code"] == "session_not_found"
    again = await probe.wait_for(
        lambda m: m.topic == f"{probe.base}/desk/{sid}/event" and bool(m.payload), 5, seen
    )
    assert again.json()["type"] == "session_ended" and again.json()["seq"] == 1


def _desk_polls(emu: Emulator, sid: str) -> int:
    entries = emu.state.journal.entries(path="get_session_state", kind="http", limit=100_000)
    return sum(1 for e in entries if e.get("session_id") == sid)


async def test_sigkill_of_the_busiest_moves_its_channels_in_time(running: Running) -> None:
    sids = await running.sessions(24)
    spread = _channels_by_owner(sids, NAMES)
    busiest = spread.most_common(1)[0][0]
    theirs = [s for s in sids if owner_of(s, NAMES) == busiest]
    opened = {s: socket_stats(running.emu)[s].get("opened", 0) for s in theirs}
    running.cluster.signal(busiest, signal.SIGKILL)
    loop = asyncio.get_running_loop()
    killed = loop.time()
    await until(
        lambda: (
            all(socket_stats(running.emu)[s].get("opened", 0) > opened[s] for s in theirs)
            and all(s in running.emu.state.channels for s in theirs)
        ),
        1.5 * KEEPALIVE + 5,
        "the busiest instance's sessions to have channels again",
    )
    took = loop.time() - killed
    survivors = [n for n in NAMES if n != busiest]
    assert active(running.probe) == set(survivors)
    assert took < 1.5 * KEEPALIVE + 5, took


@pytest.mark.parametrize("protocol", [5, 4])
async def test_the_request_command_against_a_cluster(
    running: Running, broker: Broker, base: str, protocol: int
) -> None:
    mark = len(running.probe.messages)
    code, out, err = await cli(broker.url, base, "ivh/list_sessions", "{}", protocol=protocol)
    assert code == 0, err
    assert json.loads(out)["status"] == "ok"
    await asyncio.sleep(0.5)
    # one instance answered: on 3.1.1 the shared response topic carries exactly one answer
    shared = [
        m for m in running.probe.messages[mark:] if m.topic.endswith("response/ivh/list_sessions")
    ]
    assert len(shared) == (1 if protocol == 4 else 0), shared
    assert calls(running.emu, "listsessionofuin") > 0


async def test_shorthand_json_with_transaction_and_expiry(running: Running) -> None:
    (sid,) = await running.sessions(1)
    probe = running.probe
    future = time.time() + 60
    await probe.publish(f"ivh/{sid}/get", {"transaction": "g1", "expires_at": future})
    await probe.publish(f"ivh/{sid}/get", {"transaction": "g2", "expires_at": 1})
    await asyncio.sleep(1.5)
    replies = {r["transaction"]: r for r in probe.on("bridge/response/ivh/get_session")}
    assert replies["g1"]["status"] == "ok", replies
    assert replies["g2"]["error"]["code"] == "expired", replies
    assert len(probe.on("bridge/response/ivh/get_session")) == 2


async def test_while_the_cluster_starts_a_request_gets_one_retry_answer(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    async with emulator() as emu, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path, n=2, TENCENT2MQTT_CLUSTER__SETTLE="4")
        cluster.start_all()
        try:
            await until(
                lambda: (
                    {d["state"] for d in docs(probe).values()} == {"joining"}
                    and len(docs(probe)) == 2
                ),
                15,
                "two joining",
            )
            early = await probe.request("ivh/list_sessions", {}, 5)
            await all_active(probe, ["b0", "b1"])
            later = await probe.request("ivh/list_sessions", {}, 5)
            await asyncio.sleep(0.5)
        finally:
            cluster.stop_all()
    assert early["status"] == "error" and early["error"]["code"] == "rate_limited", early
    assert early["error"]["retryable"] is True
    assert later["status"] == "ok", later
    assert len(probe.on("bridge/response/ivh/list_sessions")) == 2  # one answer each


async def test_desk_callbacks_to_one_instance_are_published_by_each_sessions_owner(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    """Tencent POSTs to one instance (its URL, or a load balancer's choice): the notification
    goes to the session's owner, which publishes all of its events, one `seq`; a retry that
    reaches another instance is published once."""
    path = f"/desk/callback/{uuid.uuid4().hex}{uuid.uuid4().hex}"
    ports = {name: free_port() for name in NAMES}
    each = {n: {"TENCENT2MQTT_HTTP__LISTEN": f"127.0.0.1:{ports[n]}"} for n in NAMES}
    async with emulator() as emu, Admin(emu) as admin, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path, each=each, TENCENT2MQTT_DESK__CALLBACK=path)
        async with cluster.up(probe):
            sid = next(f"desk-{i}" for i in range(50) if owner_of(f"desk-{i}", NAMES) != "b0")
            await admin.call(
                "POST", "/desk/callback", {"url": f"http://127.0.0.1:{ports['b0']}{path}"}
            )
            await admin.call("POST", "/desk/sessions", {"session_id": sid})
            watched = await probe.request("desk/watch", {"session_id": sid, "interval": 0.2})
            assert watched["status"] == "ok"
            await admin.call("POST", f"/desk/sessions/{sid}/chat", {"role": "user", "text": "hi"})
            await admin.desk_state(sid, "agent", "bob@x")
            await probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "user_message", 10)
            await probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "agent", 10)
            retry = {"SessionId": sid, "Event": "User.Timeout", "EventTime": 1}
            query = {
                "SdkAppid": str(emu.config.sdkappid),
                "CallbackCommand": "Desk.SessionEventNotify",
                "RequestID": "retried-1",
            }
            async with httpx.AsyncClient() as http:
                for name in ("b0", "b1", "b2"):  # the same delivery, through each instance
                    url = f"http://127.0.0.1:{ports[name]}{path}"
                    answer = await http.post(url, params=query, json=retry)
                    assert answer.json()["ActionStatus"] == "OK"
            await probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "user_timeout", 10)
            await asyncio.sleep(1.0)
    events = probe.on(f"desk/{sid}/event")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), [
        (e["seq"], e["type"]) for e in events
    ]
    types = [e["type"] for e in events]
    assert types.count("user_message") == 1 and types.count("user_timeout") == 1, types
    assert [e["after"] for e in events if e["type"] == "state_changed"].count("agent") == 1

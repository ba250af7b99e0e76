"""`examples/node-red/flows.json`: an importable flow, wired right, on the bridge's real topics."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bridge.core.topics import Route, Topics

FLOWS = Path(__file__).parents[2] / "examples/node-red/flows.json"
TOPICS = Topics("tencent2mqtt")


def nodes() -> list[dict[str, Any]]:
    data = json.loads(FLOWS.read_text())
    assert isinstance(data, list)
    return data


def by_type(kind: str) -> list[dict[str, Any]]:
    return [n for n in nodes() if n["type"] == kind]


def matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (+ and #)."""
    p, t = pattern.split("/"), topic.split("/")
    for i, part in enumerate(p):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(p) == len(t)


def test_ids_unique_and_every_wire_lands_on_a_node() -> None:
    ids = [n["id"] for n in nodes()]
    assert len(ids) == len(set(ids))
    tabs = {n["id"] for n in by_type("tab")}
    assert len(tabs) == 1
    for node in nodes():
        if node["type"] not in ("tab", "mqtt-broker"):
            assert node["z"] in tabs, node["id"]
        for output in node.get("wires", []):
            for target in output:
                assert target in ids, (node["id"], target)


def test_mqtt_nodes_use_the_broker_node() -> None:
    brokers = {n["id"] for n in by_type("mqtt-broker")}
    assert len(brokers) == 1
    mqtt = by_type("mqtt in") + by_type("mqtt out")
    assert mqtt and all(n["broker"] in brokers for n in mqtt)


def test_listens_to_the_bridge_topics() -> None:
    filters = {n["topic"]: n for n in by_type("mqtt in")}
    assert matches(
        next(iter(f for f in filters if f.endswith("/event"))), TOPICS.event("ivh", "s1")
    )
    assert matches(next(iter(f for f in filters if f.endswith("/state"))), TOPICS.ivh_state("s1"))
    for node in filters.values():
        assert node["datatype"] == "json"
        assert node["wires"][0], f"{node['name']} goes nowhere"


def reaches(start: str, target_type: str) -> bool:
    index = {n["id"]: n for n in nodes()}
    todo, seen = [start], set()
    while todo:
        node = index[todo.pop()]
        if node["type"] == target_type:
            return True
        seen.add(node["id"])
        todo += [t for out in node.get("wires", []) for t in out if t not in seen]
    return False


def test_the_wav_is_read_whole_as_bytes() -> None:
    [reader] = by_type("file in")
    assert reader["format"] == "" and reader["chunk"] is False  # one Buffer, not lines
    assert reader["filename"].endswith(".wav")


def test_every_inject_reaches_mqtt_out() -> None:
    injects = {n["name"]: n for n in by_type("inject")}
    assert {"Say hello", "Close session", "Create a session", "Play a WAV"} <= set(injects)
    for node in injects.values():
        assert reaches(node["id"], "mqtt out"), node["name"]


RUN = """
const nodes = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
const store = {session_id: null};
const flow = {get: k => store[k], set: (k, v) => { store[k] = v; }};
const node = {warn: () => {}};
const fn = name => new Function('msg', 'flow', 'node', nodes.find(n => n.name === name).func);
const out = {};
out.create = fn('create_session request')({payload: 1}, flow, node);
out.track = fn('remember + start')(
  {payload: {session_id: 's-1', status: 'in_progress', started: false}}, flow, node);
out.text = fn('to the text topic')({payload: 'Hello'}, flow, node);
const wav = fn('to the audio topic')({payload: Buffer.from('RIFF....WAVE')}, flow, node);
out.audio = {topic: wav.topic, binary: Buffer.isBuffer(wav.payload)};
out.not_a_buffer = fn('to the audio topic')({payload: 'RIFF'}, flow, node);
out.close = fn('to the close topic')({payload: ''}, flow, node);
fn('remember + start')({payload: {session_id: 's-1', status: 'closed'}}, flow, node);
out.after_close = fn('to the text topic')({payload: 'Hello'}, flow, node);
console.log(JSON.stringify(out));
"""


def test_function_nodes_address_the_right_actions() -> None:
    done = subprocess.run(
        ["node", "-e", RUN, str(FLOWS)], capture_output=True, text=True, timeout=30, check=True
    )
    out = json.loads(done.stdout)

    def route(msg: dict[str, Any]) -> Route:
        parsed = TOPICS.parse(msg["topic"])
        assert isinstance(parsed, Route), msg
        return parsed

    assert route(out["create"]).action == "ivh/create_session"
    assert set(out["create"]["payload"]) >= {"virtualman_project_id", "user_id"}
    assert route(out["track"]).action == "ivh/start_session"
    assert out["track"]["payload"] == {"session_id": "s-1"}
    assert (route(out["text"]).action, route(out["text"]).session_id) == ("ivh/send_text", "s-1")
    assert out["text"]["payload"] == "Hello"
    assert (route(out["audio"]).action, route(out["audio"]).session_id) == ("ivh/send_audio", "s-1")
    assert out["audio"]["binary"] is True and out["not_a_buffer"] is None
    assert out["create"]["payload"]["driver_type"] == 3  # a session that takes audio
    assert route(out["close"]).action == "ivh/close_session"
    assert out["after_close"] is None


DESK_RUN = """
const nodes = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
const f = new Function('msg', 'flow', 'node',
  nodes.find(n => n.name === 'answer a user message').func);
const event = {type: 'user_message', session_id: 'd-1', data: {text: 'where is my order'}};
console.log(JSON.stringify({
  reply: f({payload: event}, {}, {}),
  other: f({payload: {...event, type: 'bot_message'}}, {}, {}),
}));
"""


def test_a_user_message_is_answered_with_a_streamed_reply() -> None:
    filters = [n for n in by_type("mqtt in") if matches(n["topic"], TOPICS.event("desk", "d-1"))]
    assert len(filters) == 1 and reaches(filters[0]["id"], "mqtt out")
    done = subprocess.run(
        ["node", "-e", DESK_RUN, str(FLOWS)], capture_output=True, text=True, timeout=30, check=True
    )
    out = json.loads(done.stdout)
    assert out["other"] is None
    (parts,) = out["reply"]
    routes = [TOPICS.parse(p["topic"]) for p in parts]
    assert all(isinstance(r, Route) and r.action == "desk/send_stream" for r in routes)
    assert {r.session_id for r in routes if isinstance(r, Route)} == {"d-1"}
    bodies = [json.loads(p["payload"]) for p in parts]
    assert "".join(b["chunk"] for b in bodies) == "You said: where is my order"
    assert [b.get("finish", False) for b in bodies] == [False] * (len(bodies) - 1) + [True]

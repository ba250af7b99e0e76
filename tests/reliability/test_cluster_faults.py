"""Scale-out under faults (docs/scale-out.md): three real bridge processes on a real mosquitto
and the emulator; rolling restarts under load, a Desk stream across a restart, a frozen owner,
an instance rejoining with its id, and a broker restart."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from pathlib import Path

from bridge.emulator import Emulator
from tests.support import figures
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator
from tests.support.cluster import (
    FROZEN_WILL_WITHIN,
    Cluster,
    active,
    all_active,
    calls,
    docs,
    owner_of,
    socket_stats,
    until,
)
from tests.support.mqtt_probe import Probe

NAMES = ["b0", "b1", "b2"]


async def _sessions(admin: Admin, emu: Emulator, count: int) -> list[str]:
    body = await admin.call("POST", "/ivh/sessions", {"count": count})
    sids = list(body["session_ids"])
    await _all_channels(emu, sids, 20)
    return sids


async def _all_channels(emu: Emulator, sids: list[str], timeout: float) -> None:
    await until(lambda: all(s in emu.state.channels for s in sids), timeout, "every channel")


def _no_second_socket(emu: Emulator, sids: list[str]) -> None:
    stats = socket_stats(emu)
    busy = {s: stats[s] for s in sids if stats.get(s, {}).get("refused_busy")}
    assert not busy, f"second sockets refused: {busy}"


class Load:
    """Requests at a steady rate, each with its own transaction; answers counted by it."""

    def __init__(self, probe: Probe, sids: list[str], desk_sid: str, rate: float) -> None:
        self._probe, self._sids, self._desk, self._rate = probe, sids, desk_sid, rate
        self.sent: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while True:
            tx = f"r{i}-{uuid.uuid4().hex[:4]}"
            if i % 4 == 0:
                action, body = "desk/get_session_state", {"session_id": self._desk}
            else:
                action, body = "ivh/get_session", {"session_id": self._sids[i % len(self._sids)]}
            self.sent.append(tx)
            await self._probe.publish(f"bridge/request/{action}", {**body, "transaction": tx})
            i += 1
            await asyncio.sleep(1 / self._rate)

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def answers(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for action in ("desk/get_session_state", "ivh/get_session"):
            for r in self._probe.on(f"bridge/response/{action}"):
                out[r.get("transaction")] += 1
        return out

    def errors(self) -> list[dict[str, object]]:
        return [
            r
            for action in ("desk/get_session_state", "ivh/get_session")
            for r in self._probe.on(f"bridge/response/{action}")
            if r.get("status") != "ok"
        ]


async def test_rolling_restart_under_20_requests_per_second(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    async with emulator() as emu, Admin(emu) as admin, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path)
        async with cluster.up(probe):
            sids = await _sessions(admin, emu, 9)
            desk_sid = await admin.desk_session(state="chatbot")
            before = calls(emu, "statsession") + calls(emu, "get_session_state")
            load = Load(probe, sids, desk_sid, rate=20)
            load.start()
            await asyncio.sleep(1.0)
            for name in NAMES:
                assert await cluster.terminate(name) == 0, cluster.logs()
                cluster.start(name)
                await all_active(probe, NAMES)
                await asyncio.sleep(0.5)
            await load.stop()
            await until(lambda: len(load.answers()) >= len(load.sent), 10, "every answer")
            await asyncio.sleep(0.5)
            await _all_channels(emu, sids, 10)
        answers = load.answers()
        assert set(answers) == set(load.sent), set(load.sent) - set(answers)
        assert all(n == 1 for n in answers.values()), answers.most_common(3)
        assert not load.errors(), load.errors()[:3]
        after = calls(emu, "statsession") + calls(emu, "get_session_state")
        # every request once upstream; the channels' reconnect checks call statsession too
        reconnect_checks = sum(c.get("opened", 0) - 1 for c in socket_stats(emu).values())
        assert after - before - len(load.sent) <= max(0, reconnect_checks), after - before
        _no_second_socket(emu, sids)
        figures.add("cluster_rolling_restart_requests", len(load.sent))


async def test_desk_stream_exact_across_a_restart_of_its_owner(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    async with emulator() as emu, Admin(emu) as admin, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path)
        async with cluster.up(probe):
            sid = await admin.desk_session(state="agent", agent_id="a1")
            streamer = owner_of(sid, NAMES)
            other = next(n for n in NAMES if n != streamer)
            words = [f"w{i} " for i in range(120)]
            restarts = {30: other, 70: streamer}  # a restart of another, then of the owner
            for i, word in enumerate(words):
                await probe.publish(f"desk/{sid}/stream", word.encode())
                await asyncio.sleep(0.03)
                if i in restarts:
                    assert await cluster.terminate(restarts[i]) == 0
                    cluster.start(restarts[i])
                    await all_active(probe, NAMES)
            done = await probe.request(
                "desk/send_stream", {"session_id": sid, "chunk": "end", "finish": True}, 15
            )
            assert done["status"] == "ok", done
        messages = list(emu.state.desk.live[sid].messages)
        text = "".join("".join(m.chunks) for m in messages)
        assert text == "".join(words) + "end"
        assert len(messages) >= 2  # the owner's restart finished one and began another


async def test_sigstop_then_sigcont_of_an_owner(broker: Broker, base: str, tmp_path: Path) -> None:
    async with emulator() as emu, Admin(emu) as admin, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path)
        async with cluster.up(probe):
            sids = await _sessions(admin, emu, 12)
            frozen = Counter(owner_of(s, NAMES) for s in sids).most_common(1)[0][0]
            theirs = [s for s in sids if owner_of(s, NAMES) == frozen]
            opened = {s: socket_stats(emu)[s].get("opened", 0) for s in theirs}
            cluster.signal(frozen, signal.SIGSTOP)
            await probe.wait_json(
                "bridge/state", lambda s: s.get("instance") == frozen, FROZEN_WILL_WITHIN
            )
            await until(lambda: frozen not in active(probe), 5, "the frozen one removed")
            await asyncio.sleep(1.0)  # survivors try; the frozen one still holds the sockets
            woke = asyncio.get_running_loop().time()
            cluster.signal(frozen, signal.SIGCONT)
            await until(
                lambda: all(socket_stats(emu)[s].get("opened", 0) > opened[s] for s in theirs),
                5,
                "the survivors to open the channels once the woken one closed them",
            )
            took = asyncio.get_running_loop().time() - woke
            await all_active(probe, NAMES)  # it rejoined
            await _all_channels(emu, sids, 10)
            log = cluster.procs[frozen].log()
        assert "dropping all session work" in log, log[-3000:]
        assert took < 5
        figures.add("cluster_sigstop_takeovers")


async def test_an_instance_rejoining_with_its_id(broker: Broker, base: str, tmp_path: Path) -> None:
    async with emulator() as emu, Admin(emu) as admin, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path)
        async with cluster.up(probe):
            sids = await _sessions(admin, emu, 12)
            cluster.signal("b1", signal.SIGKILL)
            cluster.start("b1")  # at once: its will and its new document race
            await until(lambda: active(probe) == set(NAMES), 20, "b1 active again")
            await asyncio.sleep(1.5)
            await _all_channels(emu, sids, 10)
            answer = await probe.request("ivh/get_session", {"session_id": sids[0]})
        assert answer["status"] == "ok", answer
        assert sorted(emu.state.channels) == sorted(sids)


async def test_a_broker_restart_while_three_run(
    own_broker: Broker, base: str, tmp_path: Path
) -> None:
    async with emulator() as emu, Admin(emu) as admin:
        cluster = Cluster(own_broker, base, emu, tmp_path)
        cluster.start_all()
        try:
            async with Probe(own_broker.port, base) as probe:
                await all_active(probe, NAMES)
                sids = await _sessions(admin, emu, 9)
            own_broker.kill()
            await asyncio.sleep(1.0)
            own_broker.start()
            async with Probe(own_broker.port, base) as probe:
                await all_active(probe, NAMES, 20)
                await _all_channels(emu, sids, 15)
                answers = [
                    await probe.request("ivh/get_session", {"session_id": s}, 10) for s in sids
                ]
                await probe.wait_json(
                    f"ivh/{sids[0]}/state", lambda s: s["status"] == "in_progress", 10
                )
                await asyncio.sleep(0.5)
                replies = probe.on("bridge/response/ivh/get_session")
        finally:
            cluster.stop_all()
        assert all(a["status"] == "ok" for a in answers), answers
        assert len(replies) == len(sids)  # one answer each
        figures.add("broker_restarts")


async def test_every_instance_killed_then_a_new_one_answers_everything(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    """b1 dies (b0 clears it), then b0 dies with nobody left to see its will: its `active`
    document stays retained. A new instance b2 hears nothing from b0 while it settles, clears
    the document, owns every key and says `online`."""
    async with emulator() as emu, Admin(emu) as admin, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path)
        try:
            cluster.start("b0")
            cluster.start("b1")
            await until(lambda: active(probe) == {"b0", "b1"}, 20, "b0 and b1 active")
            cluster.signal("b1", signal.SIGKILL)
            await until(lambda: active(probe) == {"b0"}, FROZEN_WILL_WITHIN, "b1 cleared")
            cluster.signal("b0", signal.SIGKILL)
            await asyncio.sleep(1.0)
            assert active(probe) == {"b0"}  # retained, and no will will clear it
            cluster.start("b2")
            await until(lambda: active(probe) == {"b2"}, 20, "b0 cleared, b2 active")
            desk = await admin.desk_session(state="chatbot")
            sids = [desk, *(f"gone-{i}" for i in range(11))]  # once b0's keys among them
            assert any(owner_of(s, ["b0", "b2"]) == "b0" for s in sids)
            for sid in sids:
                answer = await probe.request("desk/get_session_state", {"session_id": sid}, 5)
                assert answer["status"] == "ok" or answer["error"]["code"] == "session_not_found"
            states = probe.on("bridge/state")
            assert states[-1] == {"state": "online"}, states
        finally:
            cluster.stop_all()


async def test_the_last_active_instance_leaving_while_another_joins(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    """b0, alone active, stops while b1 is still joining: `offline` is right for that moment,
    and b1 says `online` once it is active (it reads offline only when no instance is left)."""
    async with emulator() as emu, Probe(broker.port, base) as probe:
        cluster = Cluster(broker, base, emu, tmp_path, TENCENT2MQTT_CLUSTER__SETTLE="3")
        try:
            cluster.start("b0")
            await until(lambda: active(probe) == {"b0"}, 20, "b0 active")
            cluster.start("b1")
            await until(lambda: docs(probe).get("b1", {}).get("state") == "joining", 20, "b1")
            assert await cluster.terminate("b0") == 0
            assert probe.on("bridge/state")[-1] == {"state": "offline", "reason": "shutdown"}
            await until(lambda: active(probe) == {"b1"}, 20, "b1 active")
            assert probe.on("bridge/state")[-1] == {"state": "online"}  # before its `active`
        finally:
            cluster.stop_all()


async def test_after_a_broker_restart_the_owners_retain_their_states_and_watches_again(
    own_broker: Broker, base: str, tmp_path: Path
) -> None:
    """The broker comes back empty (no persistence): each owner retains its sessions' states
    again without being asked, and a watch still outlives its instance."""
    async with emulator() as emu, Admin(emu) as admin:
        # a listing poll every 3 s: the outage and the settle fit between two polls
        cluster = Cluster(own_broker, base, emu, tmp_path, TENCENT2MQTT_IVH__POLL_INTERVAL="3")
        cluster.start_all()
        try:
            async with Probe(own_broker.port, base) as probe:
                await all_active(probe, NAMES)
                sids = await _sessions(admin, emu, 6)
                desk = await admin.desk_session(state="chatbot")
                assert (await probe.request("desk/watch", {"session_id": desk, "interval": 0.3}))[
                    "status"
                ] == "ok"
                await probe.wait_json(f"desk/{desk}/state", lambda s: s["state"] == "chatbot")
            own_broker.kill()
            await asyncio.sleep(1.0)
            own_broker.start()
            async with Probe(own_broker.port, base) as probe:
                await all_active(probe, NAMES, 20)
                kept = await probe.wait_json(f"desk/{desk}/state", lambda s: bool(s["watch"]), 10)
                assert kept["state"] == "chatbot" and kept["watch"] == {"interval": 0.3}
                for sid in sids:
                    await probe.wait_json(f"ivh/{sid}/state", lambda s: s["started"], 10)
                await probe.wait_json("ivh/sessions", lambda s: len(s["sessions"]) == 6, 10)
                watcher = owner_of(desk, NAMES)
                assert await cluster.terminate(watcher) == 0
                cluster.start(watcher)
                await all_active(probe, NAMES, 20)
                await admin.desk_state(desk, "agent", "a1")
                change = await probe.wait_json(
                    f"desk/{desk}/event", lambda e: e["type"] == "state_changed", 10
                )
                assert change["after"] == "agent"
        finally:
            cluster.stop_all()


async def test_a_fence_stops_an_action_between_its_retries(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    """A Desk query fails (141002, retried after 3 s); its owner is frozen meanwhile, long
    enough to fence itself when it wakes (0.4 x keepalive), not for its will: it makes no
    second call, and answers the request `channel_unavailable` (retryable)."""
    async with emulator() as emu, Admin(emu) as admin, Probe(broker.port, base) as probe:
        cluster = Cluster(  # a retry 3 s after a failure
            broker,
            base,
            emu,
            tmp_path,
            TENCENT2MQTT_RETRY__INITIAL_DELAY="3",
            TENCENT2MQTT_RETRY__MAX_DELAY="3",
        )
        async with cluster.up(probe):
            sid = await admin.desk_session(state="chatbot")
            await admin.fault("get_session_state", 5, error_code=141002)
            asking = asyncio.create_task(
                probe.request("desk/get_session_state", {"session_id": sid}, 15)
            )
            await until(lambda: _queries(emu) == 1, 5, "the first call")
            owner = owner_of(sid, NAMES)
            cluster.signal(owner, signal.SIGSTOP)
            await asyncio.sleep(1.5)
            cluster.signal(owner, signal.SIGCONT)
            answer = await asking
            await asyncio.sleep(2.5)  # past the retry's delay
        assert answer["error"]["code"] == "channel_unavailable" and answer["error"]["retryable"]
        assert _queries(emu) == 1


def _queries(emu: Emulator) -> int:
    """State queries the armed fault answered (their bodies are not kept)."""
    entries = emu.state.journal.entries(path="get_session_state", kind="http", limit=100_000)
    return sum(1 for e in entries if e.get("fault") is not None)

"""The demo's scripted kiosk: a digital human session from creation to close, and a desk reply.

It talks to the bridge only over MQTT (requests with MQTT 5 Response Topics, and one shorthand
topic), and to the emulator's admin API only to play the contact-center side (a customer session
that an agent picks up).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import click

from bridge.cli.demo.monitor import Monitor
from bridge.cli.demo.tone import tone_wav
from bridge.core.topics import Topics
from bridge.mqtt.toolclient import ToolClient, request

log = logging.getLogger(__name__)
STEP_TIMEOUT = 30.0


class KioskFailed(Exception):
    """A step of the script got an error response or timed out."""


class Kiosk:
    """One scripted run; `pace` seconds between steps so a human can follow."""

    def __init__(
        self,
        *,
        client: ToolClient,
        monitor: Monitor,
        topics: Topics,
        admin_url: str,
        pace: float,
        color: bool,
    ) -> None:
        self._client = client
        self._monitor = monitor
        self._topics = topics
        self._admin_url = admin_url
        self._pace = pace
        self._color = color

    def say(self, text: str) -> None:
        """A narration line, set apart from the traffic."""
        line = f"\n>>> kiosk: {text}"
        self._monitor.echo(click.style(line, bold=True) if self._color else line)

    async def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """One request; its `data`, or KioskFailed on an error response."""
        async with asyncio.timeout(STEP_TIMEOUT):
            answer = await request(self._client, self._topics, action, params)
        if answer.get("status") != "ok":
            raise KioskFailed(f"{action} failed: {answer.get('error')}")
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    async def until(self, topic: str, check: Callable[[Any], bool], since: int = 0) -> Any:
        """Wait (bounded) for a payload on `<base>/<topic>`."""
        try:
            async with asyncio.timeout(STEP_TIMEOUT):
                return await self._monitor.wait_for(topic, check, since=since)
        except TimeoutError as exc:
            raise KioskFailed(f"nothing came on {topic} in {STEP_TIMEOUT:g} s") from exc

    async def pause(self) -> None:
        """Let the reader catch up."""
        await asyncio.sleep(self._pace)

    async def run(self) -> None:
        """The whole script."""
        await self.until("bridge/state", lambda s: s.get("state") == "online")
        sid = await self.digital_human()
        await self.desk_reply()
        await self.close(sid)
        self.say("done: every step went through the bridge over MQTT")

    async def digital_human(self) -> str:
        """Create, start and drive a session; its id."""
        self.say("create a digital human session (ivh/create_session)")
        created = await self.call(
            "ivh/create_session",
            {
                "virtualman_project_id": "demo-project",
                "user_id": "kiosk-1",
                "protocol": "webrtc",
                "driver_type": 3,  # voice-driven: it takes audio, and text too
            },
        )
        sid = str(created["session_id"])
        await self.until(f"ivh/{sid}/state", lambda s: s.get("status") == "in_progress")
        await self.pause()
        self.say("start it: the bridge opens its command channel")
        await self.call("ivh/start_session", {"session_id": sid})
        await self.until(f"ivh/{sid}/channel", lambda c: c.get("state") == "connected")
        await self.pause()
        await self.speak(sid)
        await self.voice(sid)
        return sid

    async def voice(self, sid: str) -> None:
        """A generated tone as a WAV on the session's audio topic: paced SEND_AUDIO packets."""
        self.say("voice: a 2 s WAV on the audio topic (SEND_AUDIO, paced by the bridge)")
        mark = self._monitor.mark()
        await self._client.publish(self._topics.shorthand("ivh", sid, "audio"), tone_wav(2.0))
        reply = await self.until("bridge/response/ivh/send_audio", lambda r: True, since=mark)
        if reply.get("status") != "ok":
            raise KioskFailed(f"ivh/send_audio failed: {reply.get('error')}")
        done = _speech_over(reply["data"]["req_id"], "AudioOver")
        await self.until(f"ivh/{sid}/event", done, since=mark)
        await self.pause()

    async def speak(self, sid: str) -> None:
        """A text drive (with the emulated LLM answering), then a streamed utterance."""
        self.say("speak: SEND_TEXT; watch the speak_status and llm_content events")
        mark = self._monitor.mark()
        sent = await self.call("ivh/send_text", {"session_id": sid, "text": "Hello, what's new?"})
        await self.until(f"ivh/{sid}/event", _speech_over(sent.get("req_id")), since=mark)
        await self.pause()
        self.say("stream text in chunks (SEND_STREAMTEXT, the bridge owns ReqId and Seq)")
        for chunk in ("Streaming ", "works ", "too."):
            await self.call("ivh/stream_text", {"session_id": sid, "text": chunk})
        await self.call("ivh/stream_text", {"session_id": sid, "text": "", "final": True})
        await self.pause()

    async def desk_reply(self) -> None:
        """Watch a contact-center session and stream a reply into it."""
        self.say("contact center: a customer session appears; watch it and stream a reply")
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout, raise_for_status=True) as admin:
            url = self._admin_url.rstrip("/")
            async with admin.post(f"{url}/desk/sessions", json={"state": "chatbot"}) as created:
                sid = str((await created.json())["session_id"])
            await self.call("desk/watch", {"session_id": sid, "interval": 1.0})
            await self.until(f"desk/{sid}/state", lambda s: s.get("state") == "chatbot")
            mark = self._monitor.mark()
            for chunk in ("Thanks for waiting. ", "An agent ", "will join you now."):
                topic = self._topics.shorthand("desk", sid, "stream")
                await self._client.publish(topic, chunk.encode())
            await self.call("desk/send_stream", {"session_id": sid, "chunk": "", "finish": True})
            await self.until(f"desk/{sid}/event", _is("stream_finished"), since=mark)
            await self.pause()
            self.say("an agent picks the session up")
            moved = admin.post(f"{url}/desk/sessions/{sid}/state", json={"state": "agent"})
            async with moved as answer:
                answer.raise_for_status()  # a refused move would leave the kiosk waiting
            await self.until(f"desk/{sid}/state", lambda s: s.get("state") == "agent")
            await self.call("desk/unwatch", {"session_id": sid})
        await self.pause()

    async def close(self, sid: str) -> None:
        """Close the digital human session through its shorthand topic."""
        self.say(f"close the session: an empty message on {self._topics.base}/ivh/{sid}/close")
        await self._client.publish(self._topics.shorthand("ivh", sid, "close"), b"")
        await self.until(f"ivh/{sid}/state", lambda s: s.get("status") == "closed")


def _is(event_type: str) -> Callable[[Any], bool]:
    return lambda e: bool(e.get("type") == event_type)


def _speech_over(req_id: Any, status: str = "TextOver") -> Callable[[Any], bool]:
    def check(event: Any) -> bool:
        data = event.get("data", {})
        return bool(
            event.get("type") == "speak_status"
            and data.get("req_id") == req_id
            and data.get("speak_status") == status
        )

    return check

"""The demo web server: one page, and one WebSocket per visitor, each with its own session.

A visitor's WebSocket gets its own `Session` (its own Silero VAD state) over its own
`OmniChat` (its own dialogue history, voice and sampler): nothing a visitor says or picks
reaches another. The weights, tokenizer and codec are shared read-only, and one compute
lock takes the visitors' generation steps and frame decodes in turn: a CPU gains nothing
from running two at once, and Mimi's streaming state lives in the shared codec model.

Everything a visitor sends is validated by `protocol.py`. The socket refuses pages from
other origins (a page elsewhere must not drive a local model), more than `max_sessions`
visitors at once, and messages over the size limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from omni_model.encoders.image import load_image
from omni_model.generation import SamplingSettings
from omni_model.inference.loading import Loaded
from omni_model.inference.session import ReplyAudio, Session, SessionEvent, SessionSettings
from omni_model.quantization import SAMPLES_PER_FRAME
from omni_model.serve.protocol import (
    MAX_MESSAGE_BYTES,
    MIC_SAMPLE_RATE,
    ProtocolError,
    encode_frame,
    parse_audio,
    parse_control,
    parse_hello,
)
from omni_model.voices import Voice

STATIC = Path(__file__).parent / "static"
CLOSE_POLICY = 1008  # the WebSocket close codes used
CLOSE_BUSY = 1013


@dataclass(frozen=True)
class ServerSettings:
    max_sessions: int = 4
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    session: SessionSettings = field(default_factory=SessionSettings)
    voice: str | None = None  # the voice a visitor starts with (None: no voice prompt)
    system: str | None = None
    seed: int | None = None  # every visitor's sampler starts from it (reproducible replies)
    hello_timeout_s: float = 10.0


class Hub:
    """What the visitors share, and how many are talking."""

    def __init__(self, loaded: Loaded, settings: ServerSettings):
        self.loaded, self.settings = loaded, settings
        self.compute_lock = threading.Lock()
        self.active = 0
        if settings.voice is not None:
            loaded.voice(settings.voice)  # fail at start, not at the first visitor


def create_app(loaded: Loaded, settings: ServerSettings | None = None) -> Starlette:
    app = Starlette(
        routes=[
            Route("/", index),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            WebSocketRoute("/ws", talk),
        ]
    )
    app.state.hub = Hub(loaded, settings or ServerSettings())
    return app


async def index(request) -> FileResponse:
    return FileResponse(STATIC / "index.html")


def run_server(app: Starlette, host: str = "127.0.0.1", port: int = 8000) -> None:
    uvicorn.run(app, host=host, port=port, ws_max_size=MAX_MESSAGE_BYTES, log_level="info")


def same_origin(websocket: WebSocket) -> bool:
    """A browser names the page's origin; it must be this server. Other clients name none."""
    origin = websocket.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == websocket.headers.get("host")


async def talk(websocket: WebSocket) -> None:
    hub: Hub = websocket.app.state.hub
    if not same_origin(websocket):
        await websocket.close(code=CLOSE_POLICY)  # before accepting: the handshake fails
        return
    await websocket.accept()
    if hub.active >= hub.settings.max_sessions:
        message = f"server busy: {hub.active} visitors already, the most it takes"
        await websocket.send_json({"type": "error", "message": message})
        await websocket.close(code=CLOSE_BUSY)
        return
    hub.active += 1
    try:
        await Visitor(hub, websocket).run()
    finally:
        hub.active -= 1


class Visitor:
    """One WebSocket: reads and validates messages, feeds the session, sends its events.

    Only `send_loop` writes to the socket, so messages go out in the order the session made
    them; session events arrive from its threads through `deliver`.
    """

    def __init__(self, hub: Hub, websocket: WebSocket):
        self.hub, self.websocket = hub, websocket
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[SessionEvent | dict] = asyncio.Queue()

    async def run(self) -> None:
        try:
            timeout = self.hub.settings.hello_timeout_s
            first = await asyncio.wait_for(self.websocket.receive(), timeout)
            if first["type"] == "websocket.disconnect":
                return
            hello = parse_hello(first.get("text") or "")
            voice = self.voice(hello.voice) if hello.voice else self.default_voice()
        except (ProtocolError, FileNotFoundError, TimeoutError) as error:
            reason = "no greeting in time" if isinstance(error, TimeoutError) else str(error)
            await self.websocket.send_json({"type": "error", "message": reason})
            await self.websocket.close(code=CLOSE_POLICY)
            return
        settings = self.hub.settings
        chat = self.hub.loaded.chat(
            voice, settings.sampling, settings.system, settings.seed, self.hub.compute_lock
        )
        session = await asyncio.to_thread(Session, chat, settings.session, self.deliver)
        await self.websocket.send_json(self.ready(session))
        sender = asyncio.create_task(self.send_loop())
        try:
            await self.receive_loop(session, hello.format)
        except WebSocketDisconnect:
            pass
        finally:
            sender.cancel()
            await asyncio.to_thread(session.close)

    def ready(self, session: Session) -> dict:
        voice = session.chat.voice
        return {
            "type": "ready",
            "voices": self.hub.loaded.voice_names(),
            "voice": None if voice is None else voice.name,
            "sample_rate": self.hub.loaded.codec.sample_rate,
            "frame_samples": SAMPLES_PER_FRAME,
            "mic_sample_rate": MIC_SAMPLE_RATE,
            "vad": dataclasses.asdict(session.settings.vad),
        }

    def default_voice(self) -> Voice | None:
        name = self.hub.settings.voice
        return None if name is None else self.hub.loaded.voice(name)

    def voice(self, name: str) -> Voice:
        """Only the store's voices: a visitor must not name files on the server."""
        names = self.hub.loaded.voice_names()
        if name not in names:
            raise ProtocolError(f"unknown voice {name!r}; voices: {', '.join(names) or 'none'}")
        return self.hub.loaded.voice(name)

    def deliver(self, event: SessionEvent) -> None:
        """From the session's threads: hand the event to the event loop, never block."""
        with contextlib.suppress(RuntimeError):  # a closed loop: the visitor is gone
            self.loop.call_soon_threadsafe(self.outbox.put_nowait, event)

    async def send_loop(self) -> None:
        while True:
            item = await self.outbox.get()
            if isinstance(item, ReplyAudio):
                await self.websocket.send_bytes(encode_frame(item.index, item.samples))
            elif isinstance(item, SessionEvent):
                await self.websocket.send_json(event_message(item))
            else:
                await self.websocket.send_json(item)

    async def receive_loop(self, session: Session, audio_format: str) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                if message.get("bytes") is not None:
                    samples = parse_audio(message["bytes"], audio_format)
                    await asyncio.to_thread(session.feed, samples)
                else:
                    await self.control(session, parse_control(message.get("text") or ""))
            except (ValueError, FileNotFoundError) as error:  # ProtocolError, images, voices
                await self.outbox.put({"type": "error", "message": str(error)})

    async def control(self, session: Session, message: dict) -> None:
        kind = message["type"]
        if kind == "ptt":
            await asyncio.to_thread(session.press if message["down"] else session.release)
        elif kind == "text":
            await asyncio.to_thread(session.say, message["text"])
        elif kind == "image":
            image = load_image(message["data"], name="uploaded image")
            session.attach_image(image)
            await self.outbox.put({"type": "image", "width": image.width, "height": image.height})
        elif kind == "voice":
            session.chat.set_voice(self.voice(message["name"]))
            await self.outbox.put({"type": "voice", "name": message["name"]})
        elif kind == "interrupt":
            session.interrupt()
        elif kind == "reset":
            session.interrupt()
            await asyncio.to_thread(session.wait)
            session.chat.reset()
            await self.outbox.put({"type": "reset"})


def event_message(event: SessionEvent) -> dict:
    """A session event as JSON: its kind and fields (audio samples travel as binary)."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    fields.pop("samples", None)
    return {"type": event.kind, **fields}

"""The browser demo: the WebSocket server's validation and isolation, then the page itself in
headless Chromium with a fake microphone playing a wav file.

The server runs for real (uvicorn in a thread) and is spoken to with the `websockets`
client; the page test drives Debian's Chromium through Playwright (no browser download)
and keeps a screenshot in tests/artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import uvicorn
from talk_support import (
    VOICE_NAMES,
    build_store,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    speech16k,
)
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from omni_model.generation import SamplingSettings
from omni_model.inference.loading import load
from omni_model.serve import ServerSettings, create_app
from omni_model.serve.protocol import MAX_MESSAGE_BYTES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parent / "artifacts"
HELLO = {"type": "hello", "sample_rate": 16_000, "format": "s16le", "voice": None}
TIMEOUT = 60


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, small_codec):
    root = tmp_path_factory.mktemp("store")
    checkpoint, codec = build_store(root, small_codec)
    return load(checkpoint, store=root, codec=codec)


@contextlib.contextmanager
def running(app):
    """Serve `app` on a free local port in a thread; yields host:port."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws_max_size=MAX_MESSAGE_BYTES, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)


@pytest.fixture(scope="module")
def server(loaded):
    settings = ServerSettings(max_sessions=2, sampling=SamplingSettings(max_steps=16), seed=0)
    with running(create_app(loaded, settings)) as address:
        yield SimpleNamespace(address=address, url=f"ws://{address}/ws")


def receive_json(ws) -> dict:
    while True:
        message = ws.recv(timeout=TIMEOUT)
        if isinstance(message, str):
            return json.loads(message)


def greet(ws, **changes) -> dict:
    ws.send(json.dumps(HELLO | changes))
    return receive_json(ws)


def until(ws, kind: str) -> tuple[list[dict], int]:
    """JSON messages up to and including the first of `kind`, and the binary frames between."""
    messages, frames = [], 0
    while True:
        message = ws.recv(timeout=TIMEOUT)
        if isinstance(message, bytes):
            frames += 1
            assert len(message) == 4 + 1920 * 4
            continue
        messages.append(json.loads(message))
        if messages[-1]["type"] == kind:
            return messages, frames


def test_a_visitor_is_greeted_and_every_bad_message_is_answered_with_an_error(server):
    with connect(server.url) as ws:
        ready = greet(ws)
        assert ready["type"] == "ready" and ready["voices"] == list(VOICE_NAMES)
        assert (ready["sample_rate"], ready["frame_samples"]) == (24_000, 1920)
        bad = [
            "not json",
            json.dumps({"type": "shout"}),
            json.dumps({"type": "ptt", "down": "yes"}),
            json.dumps({"type": "text", "text": "x" * 5000}),
            json.dumps({"type": "voice", "name": "/etc/passwd"}),
            json.dumps({"type": "image", "data": "!!not base64!!"}),
            json.dumps({"type": "image", "data": "aGVsbG8="}),  # base64 of "hello"
        ]
        for message in bad:
            ws.send(message)
        errors = [receive_json(ws) for _ in bad]
        assert all(e["type"] == "error" for e in errors)
        reasons = " | ".join(e["message"] for e in errors)
        for expected in ("not JSON", "unknown message type", "boolean", "at most 2000",
                         "unknown voice", "not base64", "uploaded image"):  # fmt: skip
            assert expected in reasons
        ws.send(b"\x00" * 3)  # not whole 16-bit samples
        ws.send(b"\x00" * 40_000)  # 1.25 s: over the per-message limit
        assert "not whole s16le" in receive_json(ws)["message"]
        assert "at most 1.0 s" in receive_json(ws)["message"]
        ws.send(json.dumps({"type": "voice", "name": VOICE_NAMES[1]}))
        assert receive_json(ws) == {"type": "voice", "name": VOICE_NAMES[1]}


def test_wrong_greetings_other_origins_and_too_many_visitors_are_refused(server):
    with connect(server.url) as ws:
        assert "16000 Hz" in greet(ws, sample_rate=44_100)["message"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd.code == 1008
    with pytest.raises(InvalidStatus):
        connect(server.url, origin="http://evil.example").close()
    with connect(server.url) as first, connect(server.url) as second:
        greet(first)
        greet(second)
        with connect(server.url) as third:
            assert "server busy" in receive_json(third)["message"]


def test_sessions_are_isolated_and_typed_turns_stream_text_and_frames(server):
    with connect(server.url) as alice, connect(server.url) as bob:
        greet(alice)
        greet(bob, voice=VOICE_NAMES[0])
        alice.send(json.dumps({"type": "text", "text": "What colour is the ball?"}))
        messages, frames = until(alice, "reply_end")
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "reply_start" and kinds[-1] == "reply_end"
        assert frames == messages[-1]["frames"] == 16 - 8
        streamed = "".join(m["text"] for m in messages if m["type"] == "reply_text")
        assert streamed == messages[-1]["text"]
        with pytest.raises(TimeoutError):
            bob.recv(timeout=0.5)  # nothing of Alice's reply reaches Bob
        bob.send(json.dumps({"type": "reset"}))
        assert receive_json(bob) == {"type": "reset"}


def test_push_to_talk_over_the_socket_answers_the_held_speech(server):
    speech = (speech16k("How many circles are there?") * 32767).astype("<i2")
    with connect(server.url) as ws:
        greet(ws)
        ws.send(json.dumps({"type": "ptt", "down": True}))
        for start in range(0, len(speech), 1024):
            ws.send(speech[start : start + 1024].tobytes())
        ws.send(json.dumps({"type": "ptt", "down": False}))
        messages, frames = until(ws, "reply_end")
    kinds = [m["type"] for m in messages if m["type"] != "reply_text"]
    assert kinds == ["speech_start", "speech_end", "reply_start", "reply_end"]
    spoken = messages[1]
    assert spoken["end"] - spoken["start"] == len(speech) // 1024 * 1024
    assert frames == messages[-1]["frames"] > 0


def fake_microphone(path: Path) -> dict[str, float]:
    """A wav the fake microphone plays once: a question, a pause that ends it, a short wait
    into the reply, then speech that must interrupt the reply, then silence."""
    rate = 16_000
    question = speech16k("What colour is the red ball on the table?")
    stop = speech16k("Wait, stop, I have another question.", "en-us+m6")
    gap = np.zeros(rate, dtype=np.float32)
    parts = [gap, question, gap, np.zeros(rate // 2, dtype=np.float32), stop, gap, gap, gap]
    sf.write(path, np.concatenate(parts), rate, subtype="PCM_16")
    return {"stop_at": (2.5 * rate + len(question)) / rate}


def settle(page, condition: str, failure: str) -> None:
    """Wait until the page's `condition` holds; on timeout fail with the events it saw, the
    only trace of what the session did."""
    from playwright.sync_api import TimeoutError as PageTimeout

    try:
        page.wait_for_function(condition, timeout=TIMEOUT * 1000)
    except PageTimeout:
        events = page.evaluate("window.omni.events.map(e => e.type)")
        pytest.fail(f"{failure} within {TIMEOUT} s; events: {events}")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (make test)")
def test_the_page_talks_streams_audio_and_is_interrupted_by_speech(loaded, tmp_path):
    from playwright.sync_api import sync_playwright

    mic = tmp_path / "mic.wav"
    fake_microphone(mic)
    settings = ServerSettings(sampling=SamplingSettings(max_steps=90), seed=0, voice="alto")
    arguments = [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic}%noloop",
        "--autoplay-policy=no-user-gesture-required",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    with (
        running(create_app(loaded, settings)) as address,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=arguments)
        page = browser.new_page()
        page.goto(f"http://{address}/")
        page.click("#start")
        settle(page, "window.omni.frames > 0", "no audio frame played")
        settle(page, "window.omni.interruptions > 0", "the reply was not interrupted")
        settle(  # the interrupting question is answered in turn, to its end
            page,
            "window.omni.events.slice(window.omni.events.findIndex("
            "e => e.type === 'interrupted')).some(e => e.type === 'reply_end')",
            "the interrupting speech got no whole reply",
        )
        page.screenshot(path=str(ARTIFACTS / "browser-demo.png"), full_page=True)
        state = page.evaluate(
            "({events: window.omni.events.map(e => e.type), errors: window.omni.errors,"
            " voice: document.querySelector('#voice').value,"
            " first_reply: document.querySelector('.assistant').textContent,"
            " interrupted: document.querySelectorAll('.assistant.interrupted').length})"
        )
        browser.close()
    events = [e for e in state["events"] if e not in ("reply_text",)]
    assert state["errors"] == []
    assert state["voice"] == "alto" and state["interrupted"] == 1
    assert state["first_reply"]  # text streamed before the interruption
    first_interrupt = events.index("interrupted")
    assert events[:4] == ["ready", "speech_start", "speech_end", "reply_start"]
    assert events[first_interrupt + 1] == "speech_start"  # the speech that interrupted it
    assert "reply_start" in events[first_interrupt + 1 :]

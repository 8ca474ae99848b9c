// The demo page: microphone -> WebSocket as 16 kHz 16-bit PCM; reply frames -> speakers.
// The protocol is described in omni_model/serve/protocol.py.
"use strict";

const CHUNK = 1024; // microphone samples per message: one VAD window
const LEAD_S = 0.05; // scheduling margin for the first frame of a reply

const $ = (id) => document.getElementById(id);

// Everything the page knows; exposed as `window.omni` for tests and the console.
const omni = {
  ws: null,
  mode: "hands_free",
  talking: false, // push to talk held
  playback: null, // AudioContext at the codec's rate
  nextTime: 0, // when the next frame starts playing
  sources: new Set(),
  dropping: false, // frames of an interrupted reply still in flight are dropped
  frames: 0,
  replies: 0,
  interruptions: 0,
  events: [],
  errors: [],
  reply: null, // the transcript element of the reply being streamed
};
window.omni = omni;

function setStatus(state) {
  $("status").dataset.state = state;
  $("status").textContent = state;
}

function addTurn(role, text) {
  const turn = document.createElement("div");
  turn.className = `turn ${role}`;
  turn.textContent = text;
  $("transcript").append(turn);
  turn.scrollIntoView({ block: "end" });
  return turn;
}

function send(message) {
  if (omni.ws && omni.ws.readyState === WebSocket.OPEN) omni.ws.send(JSON.stringify(message));
}

// --- reply audio: each frame is scheduled right after the previous one ---------------
function playFrame(buffer) {
  if (omni.dropping || !omni.playback) return;
  const samples = new Float32Array(buffer, 4); // after the uint32 frame index
  const audio = omni.playback.createBuffer(1, samples.length, omni.playback.sampleRate);
  audio.copyToChannel(samples, 0);
  const source = omni.playback.createBufferSource();
  source.buffer = audio;
  source.connect(omni.playback.destination);
  const start = Math.max(omni.playback.currentTime + LEAD_S, omni.nextTime);
  source.start(start);
  omni.nextTime = start + audio.duration;
  omni.sources.add(source);
  source.onended = () => omni.sources.delete(source);
  omni.frames += 1;
  $("frames").textContent = omni.frames;
}

function stopPlayback() {
  for (const source of omni.sources) source.stop();
  omni.sources.clear();
  omni.nextTime = 0;
}

// --- server events -------------------------------------------------------------------
function onEvent(event) {
  omni.events.push(event);
  switch (event.type) {
    case "ready":
      fillVoices(event.voices, event.voice);
      setStatus("listening");
      break;
    case "speech_start":
      setStatus("hearing");
      break;
    case "speech_end":
      addTurn("user", `(spoke ${((event.end - event.start) / 16000).toFixed(1)} s)`);
      break;
    case "reply_start":
      omni.replies += 1;
      omni.dropping = false;
      omni.reply = addTurn("assistant", "");
      setStatus("replying");
      break;
    case "reply_text":
      if (omni.reply) omni.reply.textContent += event.text;
      break;
    case "reply_end":
      setStatus("listening");
      break;
    case "interrupted":
      omni.interruptions += 1;
      omni.dropping = true;
      stopPlayback();
      if (omni.reply) omni.reply.classList.add("interrupted");
      setStatus("listening");
      break;
    case "image":
      addTurn("note", `image attached (${event.width}x${event.height})`);
      break;
    case "reply_error":
    case "error":
      omni.errors.push(event.message);
      addTurn("note", `error: ${event.message}`);
      break;
  }
}

function fillVoices(names, current) {
  const select = $("voice");
  for (const name of names) select.add(new Option(name, name, false, name === current));
}

// --- microphone ------------------------------------------------------------------------
function sendAudio(samples) {
  if (!omni.ws || omni.ws.readyState !== WebSocket.OPEN) return;
  if (omni.mode === "push_to_talk" && !omni.talking) return;
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    pcm[i] = Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32767)));
  }
  omni.ws.send(pcm.buffer);
}

async function startMicrophone() {
  const context = new AudioContext({ sampleRate: 16000 }); // the browser resamples the mic
  await context.audioWorklet.addModule("/static/capture-worklet.js");
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true },
  });
  const capture = new AudioWorkletNode(context, "capture", {
    processorOptions: { chunk: CHUNK },
  });
  capture.port.onmessage = (message) => sendAudio(message.data);
  context.createMediaStreamSource(stream).connect(capture);
  capture.connect(context.destination); // keeps the worklet pulled; it outputs silence
}

function connect() {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "hello", sample_rate: 16000, format: "s16le", voice: null }));
      resolve(ws);
    };
    ws.onerror = () => reject(new Error("cannot reach the server"));
    ws.onclose = () => setStatus("off");
    ws.onmessage = (message) => {
      if (message.data instanceof ArrayBuffer) playFrame(message.data);
      else onEvent(JSON.parse(message.data));
    };
  });
}

async function start() {
  $("start").disabled = true;
  try {
    omni.playback = new AudioContext({ sampleRate: 24000 });
    omni.ws = await connect();
    await startMicrophone();
  } catch (error) {
    omni.errors.push(String(error));
    addTurn("note", `error: ${error.message}`);
    $("start").disabled = false;
    return;
  }
  for (const id of ["talk", "interrupt", "voice", "text", "image"]) $(id).disabled = false;
  document.querySelector("#ask button").disabled = false;
}

// --- controls --------------------------------------------------------------------------
$("start").onclick = start;
$("mode").onchange = () => (omni.mode = $("mode").value);
$("interrupt").onclick = () => send({ type: "interrupt" });
$("voice").onchange = () => send({ type: "voice", name: $("voice").value });

function talk(down) {
  if (omni.talking === down) return;
  omni.talking = down;
  $("talk").classList.toggle("down", down);
  if (down) stopPlayback();
  send({ type: "ptt", down });
}
$("talk").onpointerdown = () => talk(true);
$("talk").onpointerup = () => talk(false);
$("talk").onpointerleave = () => talk(false);

$("ask").onsubmit = (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  addTurn("user", text);
  send({ type: "text", text });
  $("text").value = "";
};

$("image").onchange = () => {
  const file = $("image").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    $("image-preview").src = reader.result;
    $("image-preview").hidden = false;
    send({ type: "image", data: reader.result });
  };
  reader.readAsDataURL(file);
};

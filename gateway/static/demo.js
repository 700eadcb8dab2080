// voxwire browser demo: microphone -> WS /v1/stt/stream -> words on the page.
// Protocol: docs/edge.md. Audio goes as binary frames of PCM16 little-endian at 16 kHz;
// the token goes in Sec-WebSocket-Protocol beside "voxwire.v1", never in the URL.
"use strict";

const RATE = 16000;
const FRAME_MS = 100;

// An AudioWorklet that hands 100 ms of mono float samples to the page at a time.
const WORKLET = `
class Tap extends AudioWorkletProcessor {
  constructor() { super(); this.buf = new Float32Array(${RATE * FRAME_MS / 1000}); this.n = 0; }
  process(inputs) {
    const ch = inputs[0][0];
    if (ch) for (let i = 0; i < ch.length; i++) {
      this.buf[this.n++] = ch[i];
      if (this.n === this.buf.length) { this.port.postMessage(this.buf.slice()); this.n = 0; }
    }
    return true;
  }
}
registerProcessor("tap", Tap);`;

const $ = (id) => document.getElementById(id);
let session = null, context = null, stream = null;
// What the server said last before the end (the summary), shown beside how it ended.
let outcome = "";

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function toPcm16(floats) {
  const out = new DataView(new ArrayBuffer(floats.length * 2));
  for (let i = 0; i < floats.length; i++) {
    const s = Math.max(-1, Math.min(1, floats[i]));
    out.setInt16(i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);  // little-endian
  }
  return out.buffer;
}

function onMessage(msg) {
  if (msg.session) {
    const resumed = session.resumes ? ` (resumed ${session.resumes}x)` : "";
    status(`session ${msg.session.sessionId}: listening${resumed}`);
  } else if (msg.result) {
    if (msg.result.isFinal) {
      const p = document.createElement("p");
      p.className = "final";
      p.textContent = msg.result.transcript;
      $("finals").appendChild(p);
      $("interim").textContent = "";
    } else {
      $("interim").textContent = msg.result.transcript;
    }
  } else if (msg.summary) {
    outcome = `done: ${msg.summary.audioMs} ms of audio`;
  }
}

function onState(state, detail) {
  if (state === "reconnecting") status("the gateway went away: reconnecting (no word is lost)");
  else if (state === "failed") {
    release();  // whoever ended the session, the microphone goes off with it
    status(detail, true);
    $("stop").disabled = true;
  } else if (state === "ended") {
    release();
    status(outcome ? `${outcome} (closed 1000)` : "closed (1000)");
    $("stop").disabled = true;
  }
}

async function start() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (!token) { status("no token in the URL fragment (#token=...)", true); return; }
  $("start").disabled = true;
  // The browser's own noise suppression and gain control reshape speech for a listener, not a
  // recognizer: with them on, the fixture's first sentence came out "please call me dad" or
  // "please calm event" in 6 of 6 runs, with them off "please call me back" in 6 of 6 (the
  // gain control ramps up over the first seconds). Echo cancellation stays: a page that plays
  // speech back needs it, and with nothing playing it leaves the signal as it is.
  stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, noiseSuppression: false, autoGainControl: false },
  });
  context = new AudioContext({ sampleRate: RATE });
  const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
  await context.audioWorklet.addModule(url);
  const tap = new AudioWorkletNode(context, "tap");
  context.createMediaStreamSource(stream).connect(tap);
  const { SttSession, pageTokens } = await import("./voxwire.js");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  session = new SttSession({
    url: `${scheme}://${location.host}`,
    config: { model: "stt_pocketsphinx", encoding: "pcm_s16le", sample_rate: RATE,
              interim_results: true },
    getToken: pageTokens(token),
    onMessage,
    onState,
  });
  // The microphone runs before the socket opens (the handshake can take a few hundred ms on
  // a real network): the session keeps what it hears meanwhile and sends it first, so the
  // first word is not lost before the gateway's own buffering can keep it (docs/edge.md).
  // The same holds while it reconnects; what it keeps is bounded (it fails, saying so).
  session.start();
  tap.port.onmessage = (e) => session.send(toPcm16(e.data));
  $("stop").disabled = false;
}

function release() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  // stop() and the session's end both come here, and a second close() rejects
  // (InvalidStateError; the state turns "closed" only once the first has resolved).
  if (context && context.state !== "closed") context.close().catch(() => {});
}

function stop() {
  if (session) session.close();
  release();
  $("stop").disabled = true;
}

$("start").addEventListener("click", () => start().catch((e) => status(String(e), true)));
$("stop").addEventListener("click", stop);

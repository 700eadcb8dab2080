// voxwire browser demo: text -> WS /v1/tts/stream -> audio played as it arrives, words marked
// as they are heard, and a barge-in that reports what was heard. Protocol: docs/edge.md; the
// session (voxwire.js TtsSession) resumes a turn where its audio stopped when the gateway
// restarts. Audio is PCM16 little-endian at RATE.
"use strict";

const RATE = 24000;
const MODEL = "tts_espeak";

const $ = (id) => document.getElementById(id);
let tts = null, audio = null, outcome = "";
let turn = 0;        // a context per Speak: ids of their own, so a turn never waits on the last
let current = null;  // the turn playing: {id, chunks, sources, done}; null once stopped
let stoppedLate = null;  // a turn stopped after its `done`: {heard, played}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

// The context's timeline position playing now (ms), from the chunks scheduled on the
// AudioContext: what `truncate` reports, and what marks the words heard.
function playedMs() {
  if (!current) return 0;
  const now = audio.currentTime;
  let played = 0;
  for (const c of current.chunks) {
    if (now < c.at) break;
    played = c.startMs + Math.min(now - c.at, c.seconds) * 1000;
  }
  return Math.floor(played);
}

function showWords(words) {
  for (const w of words) {
    const span = document.createElement("span");
    span.textContent = w.word;
    span.dataset.endMs = w.endMs || 0;
    $("words").append(span, " ");
  }
}

// Runs each frame while a turn plays; ends with it (a stop, or its last chunk played).
function markHeard() {
  if (!current) return;
  const played = playedMs();
  for (const span of $("words").children) {
    span.classList.toggle("heard", Number(span.dataset.endMs) <= played);
  }
  const last = current.chunks[current.chunks.length - 1];
  if (current.done && (!last || audio.currentTime >= last.at + last.seconds)) {
    // All of it played: every word was heard (a word's end may round past the last sample).
    for (const span of $("words").children) span.classList.add("heard");
    status(`spoke ${current.id}: ${played} ms`);
    current = null;
    $("speak").disabled = false;
    $("stop").disabled = true;
    return;
  }
  requestAnimationFrame(markHeard);
}

function play(contextId, event) {
  if (!current || contextId !== current.id) return;  // a stopped turn's
  const pcm = new Int16Array(event.data);
  const buffer = audio.createBuffer(1, pcm.length, RATE);
  const samples = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 0x8000;
  const source = audio.createBufferSource();
  source.buffer = buffer;
  source.connect(audio.destination);
  // Chunks play back to back; one that comes late starts when it comes (a gap, not a jump).
  const previous = current.chunks[current.chunks.length - 1];
  const at = Math.max(audio.currentTime + 0.05, previous ? previous.at + previous.seconds : 0);
  source.start(at);
  current.sources.push(source);
  current.chunks.push({ at, startMs: event.audio.startMs, seconds: buffer.duration });
}

function onEvent(contextId, msg) {
  if (msg.audio) { play(contextId, msg); return; }
  const mine = current && contextId === current.id;
  if (msg.session) {
    const resumed = tts.resumes ? ` (resumed ${tts.resumes}x)` : "";
    status(`session ${msg.session.sessionId}${resumed}`);
  } else if (msg.opened && mine) status(`speaking ${current.id}`);
  else if (msg.words && mine) showWords(msg.words.words);
  else if (msg.done && mine) current.done = true;
  else if (msg.truncated) showHeard(msg.truncated.heard || [], msg.truncated.playedMs || 0);
  else if (msg.contextError) {
    const error = msg.contextError.error;
    if (error.reason === "UNKNOWN_CONTEXT" && stoppedLate) {
      // All its audio had come (its `done` before the stop): nothing left to stop; the words
      // heard are those received that ended by then (docs/edge.md, truncation).
      showHeard(stoppedLate.heard, stoppedLate.played);
    } else status(`${error.reason}: ${error.message}`, true);
  } else if (msg.error) {
    outcome = `${msg.error.reason}: ${msg.error.message}`;
    status(outcome, true);
  }
}

function showHeard(words, played) {
  $("heard").textContent = `heard (${played} ms): ${words.map((w) => w.word).join(" ")}`;
}

function onState(state, detail) {
  if (state === "reconnecting") status("reconnecting: the turn goes on where its audio stopped");
  else if (state === "failed" || state === "ended") {
    status(outcome || detail || state, state === "failed");
    $("speak").disabled = true;
    $("stop").disabled = true;
  }
}

async function speak() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (!token) { status("no token in the URL fragment (#token=...)", true); return; }
  $("speak").disabled = true;
  if (!audio) audio = new AudioContext();
  await audio.resume();
  if (!tts) {
    // One session for every turn of the page; it survives a gateway restart (voxwire.js).
    const { TtsSession, pageTokens } = await import("./voxwire.js");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    // leadMs: the gateway sends up to a second ahead of playback, so a barge-in stops a
    // context with little audio sent and unheard.
    tts = new TtsSession({ url: `${scheme}://${location.host}`, getToken: pageTokens(token),
                           onEvent, onState, leadMs: 1000 });
    tts.start();
  }
  turn += 1;
  current = { id: `turn-${turn}`, chunks: [], sources: [], done: false };
  stoppedLate = null;
  $("words").textContent = "";
  $("heard").textContent = "";
  const text = $("text").value;
  // Text that opens a <speak> document (or an XML declaration) is SSML, in the model's subset
  // (ssmlElements in /v1/capabilities), as the CLI's `voxwire speak` takes it.
  const ssml = /^\s*(<speak[\s>]|<\?xml)/.test(text);
  tts.open(current.id, { model: MODEL, wordTimestamps: true,
                         ...(ssml ? { textFormat: "TEXT_FORMAT_SSML" } : {}),
                         outputFormat: { encoding: "AUDIO_ENCODING_PCM_S16LE", sampleRateHz: RATE } });
  tts.append(current.id, text);
  tts.closeContext(current.id);
  $("stop").disabled = false;
  requestAnimationFrame(markHeard);
}

function stop() {
  if (!current) return;
  const played = playedMs();
  current.sources.forEach((s) => s.stop());
  // For the answer to a stop after `done`: the words received whose audio ended by then.
  const heard = [...$("words").children]
    .filter((s) => Number(s.dataset.endMs) <= played)
    .map((s) => ({ word: s.textContent }));
  stoppedLate = current.done ? { heard, played } : null;
  // False: the context ended here already (its done came): nothing is left to stop.
  if (!tts.truncate(current.id, played)) showHeard(heard, played);
  status(`stopped ${current.id} at ${played} ms`);
  current = null;
  $("stop").disabled = true;
  $("speak").disabled = false;
}

$("speak").addEventListener("click", () => speak().catch((e) => status(String(e), true)));
$("stop").addEventListener("click", stop);

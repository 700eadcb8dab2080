// voxwire browser client: an STT session on WS /v1/stt/stream that survives a gateway restart,
// a drain or a dropped connection (docs/edge.md, "Acknowledgements and resume"; design:
// docs/design/browser-client.md). The Python SDK (voxwire.client) does the same for servers.
//
//   const stt = new SttSession({ url: "wss://gw.example", getToken, onMessage,
//                                config: { model: "stt_pocketsphinx", encoding: "pcm_s16le",
//                                          sample_rate: 16000, interim_results: true } });
//   stt.start(); stt.send(pcm16ArrayBuffer) ...; stt.finalize("f1"); ...; stt.close();
//
// getToken() returns a fresh browser token for each connection (the page's backend mints them
// with POST /v1/auth/token; a token is good for one connection). The audio sent after the
// server's last ack is kept, and only that: on a resume it goes again from the ack, so no word
// is lost or repeated.
"use strict";

// Bytes per sample of an encoding, by its query-string name (STT) or its enum name without
// the AUDIO_ENCODING_ prefix (a TTS context's outputFormat): docs/contract.md, "Audio".
const SAMPLE_BYTES = { pcm_s16le: 2, linear16: 2, pcm_f32le: 4, mulaw: 1, alaw: 1 };
const sampleBytes = (encoding) =>
  SAMPLE_BYTES[String(encoding || "").toLowerCase().replace(/^audio_encoding_/, "")];
// Closes after which the session goes on elsewhere (docs/edge.md, "Lifecycle"): going away,
// a connection lost without a close, service restart (drain), try again later, too long.
const RESUMABLE_CLOSES = new Set([1001, 1006, 1012, 1013, 4009]);

// Long TTS text in pieces (voxwire.text_pieces, the Python SDK's): a context holds at most
// maxPendingTextBytes of unspoken text (the session's limits say the servers'; 16 KiB on the
// reference adapter), so text longer than a piece goes a piece at a time, each ended by a
// flush of the client's own, two waiting for their ack at a time. Pieces end at a paragraph
// break in their second half, else a sentence end, else a space.
const PIECE_BYTES = 4096;
// The piece size for servers whose contexts hold maxPendingTextBytes (0: not said): two
// pending fit, at most PIECE_BYTES (voxwire.text_pieces.piece_bytes).
export const pieceBytes = (maxPendingTextBytes) =>
  maxPendingTextBytes > 0 ? Math.max(1, Math.min(PIECE_BYTES, Math.floor(maxPendingTextBytes / 2)))
    : PIECE_BYTES;
const PIECE_FLUSH = "voxwire-piece-";
const utf8 = new TextEncoder();
const bytesOf = (text) => utf8.encode(text).length;
const ABBREVIATION = /(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Mt|No|vs|etc|e\.g|i\.e|[A-Z])\.)$/i;

export function textPieces(text, maxBytes = PIECE_BYTES) {
  const out = [];
  let rest = text;
  while (bytesOf(rest) > maxBytes) {
    const end = pieceEnd(rest, maxBytes);
    out.push(rest.slice(0, end));
    rest = rest.slice(end);
  }
  if (rest) out.push(rest);
  return out;
}

function pieceEnd(text, maxBytes) {
  // The most UTF-16 units from the start whose UTF-8 fits, never splitting a surrogate pair.
  let limit = Math.min(maxBytes, text.length);
  for (let over = bytesOf(text.slice(0, limit)) - maxBytes; over > 0;
       over = bytesOf(text.slice(0, limit)) - maxBytes) {
    limit -= Math.max(1, Math.floor(over / 4));  // a unit is at most 3 bytes of UTF-8
  }
  if (limit > 0 && limit < text.length && /[\uD800-\uDBFF]/.test(text[limit - 1])) limit -= 1;
  const window = text.slice(0, limit);
  let end = -1;
  for (const m of window.matchAll(/\n[ \t]*\n\s*/g)) end = m.index + m[0].length;
  if (end > window.length / 2) return end;
  const ends = [...window.matchAll(/[.!?\u2026]["')\]\u201d\u2019]*\s+/g)];
  for (const m of ends.reverse()) {
    if (!ABBREVIATION.test(window.slice(0, m.index + 1))) return m.index + m[0].length;
  }
  end = -1;
  for (const m of window.matchAll(/\s+/g)) end = m.index + m[0].length;
  return end > 0 ? end : Math.max(1, limit);
}

// getToken for a demo page: the token in the URL fragment first; for a reconnect (a gateway
// restarted or drained), the embedding application's own `voxwireToken()` (its backend mints
// tokens with POST /v1/auth/token; a token is good for one connection).
export function pageTokens(first) {
  let used = false;
  return async () => {
    if (!used) { used = true; return first; }
    if (typeof window.voxwireToken === "function") return await window.voxwireToken();
    throw new Error("the page has no voxwireToken() to get a token for a reconnect");
  };
}

// What both sessions do with their connections: one at a time, each with a fresh token;
// after a close that the session survives (RESUMABLE_CLOSES, or a retryable error event) the
// next one within reconnectWithinMs, with backoff (100 ms doubling to 2 s, or the error's
// retryAfterMs); otherwise the session fails, saying how its last connection ended.
// Subclasses give _path(first) and _opened(socket, first), and read messages in _message.
class ResumableSession {
  constructor({ url, getToken, onState = () => {}, reconnectWithinMs = 30000 }) {
    this.url = url.replace(/\/$/, "");
    this.getToken = getToken;
    this.onState = onState;
    this.reconnectWithinMs = reconnectWithinMs;
    this.resumeToken = "";
    this.sessionId = "";
    this.resumes = 0;
    this.socket = null;
    this.state = "idle";      // idle, connecting, live, reconnecting, ended, failed
    this.lastError = null;    // the server's last error event
    this.awaySince = 0;
    this.attempt = 0;
    this.lastClose = "";      // how the last connection ended, for a failure's message
    this.closeAsked = false;
  }

  start() { this._connect(); }

  _set(state, detail = "") {
    this.state = state;
    this.onState(state, detail);
  }

  async _connect() {
    const first = !this.resumeToken;
    this._set(first ? "connecting" : "reconnecting");
    let token;
    try {
      token = await this.getToken();
    } catch (error) {
      const after = this.lastClose ? ` (after ${this.lastClose})` : "";
      this._fail(`no token for the connection${after}: ${error}`);
      return;
    }
    const socket = new WebSocket(`${this.url}${this._path(first)}`,
                                 ["voxwire.v1", `voxwire.token.${token}`]);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => this._opened(socket, first);
    socket.onmessage = (event) => this._message(socket, event);
    socket.onclose = (event) => this._closed(socket, event);
  }

  _closed(socket, event) {
    if (socket !== this.socket) return;
    if (event.code === 1000 && this.closeAsked) { this._set("ended"); return; }
    const error = this.lastError;
    this.lastError = null;
    const resumable = error ? error.retryable === true : RESUMABLE_CLOSES.has(event.code);
    this.lastClose = error ? `${error.reason}: ${error.message} (closed ${event.code})`
      : `closed ${event.code}`;
    if (!resumable) {
      this._fail(this.lastClose);
      return;
    }
    // Before the session's first message there is nothing to resume: the next connection
    // starts it again, and everything kept goes first.
    const delay = error && error.retryAfterMs ? Number(error.retryAfterMs)
      : Math.min(2000, 100 * 2 ** this.attempt);
    this._away(delay);
  }

  _away(delayMs) {
    this.socket = null;
    if (!this.awaySince || this.state === "live") this.awaySince = performance.now();
    if (performance.now() - this.awaySince > this.reconnectWithinMs) {
      this._fail(`no gateway took the session within ${this.reconnectWithinMs} ms`);
      return;
    }
    this.attempt += 1;
    this._set("reconnecting");
    setTimeout(() => this._connect(), delayMs);
  }

  _fail(why) {
    if (this.socket) { this.socket.onclose = null; this.socket.close(); }
    this.socket = null;
    this._set("failed", why);
  }
}

export class SttSession extends ResumableSession {
  constructor({ url, config, getToken, onMessage = () => {}, onState = () => {},
                reconnectWithinMs = 30000, maxKeptMs = 0 }) {
    super({ url, getToken, onState, reconnectWithinMs });
    this.config = config;
    this.onMessage = onMessage;
    const bytes = sampleBytes(config.encoding);
    if (!bytes) throw new Error(`unknown encoding ${config.encoding}`);
    this.frameBytes = bytes * (Number(config.channels) || 1);
    this.rate = Number(config.sample_rate);
    // Audio kept while the socket is away is bounded: past this, the session fails and says
    // so rather than holding the microphone's audio without end. By default twice the
    // gateway's replay window (limits.replayWindow, 30 s unless configured; it forces a final
    // before a live connection's unacknowledged audio reaches it): what it keeps itself.
    this.maxKeptMs = maxKeptMs;
    this.maxKeptBytes = this._bytes(maxKeptMs || 60000);
    this.kept = [];           // ArrayBuffers sent (or to send) after the last ack, in order
    this.keptStart = 0;       // byte offset of kept[0] in the session's audio
    this.keptBytes = 0;
    this.ack = null;          // the last ack: {finalizedThroughMs, nextUtteranceIndex}
    this.replayedMs = 0;
    // Finalizes and config updates, each with the audio position (byte) it was asked at: kept
    // until answered (an accepted update for good: the token holds only the config the session
    // started with, so it goes again after a resume the token does not cover).
    this.controls = [];       // {kind, message, id, at, accepted}
    this.tokenCovers = 0;     // accepted updates (in order) the resume token's config holds
    this.updates = 0;
    // What a resumed connection says again and the page has had: `started`, and the
    // speechStarted / utteranceEnd of utterances already reported (ids "u<n>", in order).
    this.startedSeen = false;
    this.speechSeen = -1;
    this.endsSeen = -1;
  }

  // Audio: whole frames of the config's encoding. Sent at once when live; kept either way
  // until an ack covers it.
  send(buffer) {
    if (this.state === "ended" || this.state === "failed" || this.closeAsked) return;
    this.kept.push(buffer);
    this.keptBytes += buffer.byteLength;
    if (this.keptBytes > this.maxKeptBytes) {
      this._fail(`more than ${this.maxKeptBytes} bytes of audio unacknowledged: the gateway ` +
                 `could not be reached again in time`);
      return;
    }
    if (this.state === "live") this.socket.send(buffer);
  }

  // A final now for the audio sent so far (docs/edge.md): the page gets its finalizeAck
  // (with an ack) once, whatever connection answers it. Asked while the session reconnects,
  // it goes after the audio sent before it. Ids beginning with "vx-" are the gateway's and
  // the SDKs' own forced finals.
  finalize(finalizeId = "") {
    if (String(finalizeId).startsWith("vx-")) {
      throw new Error(`finalize ids beginning with "vx-" are reserved: ${finalizeId}`);
    }
    this._control("finalize", { finalize: { finalizeId } }, finalizeId);
  }

  // Endpointing or vocabulary for the rest of the session ({endpointing: {silenceMs}, ...});
  // the gateway answers updateConfigAck (accepted, or with its error). Its updateId, made up
  // when missing, is returned. An accepted update is sent again after a resume whose token
  // does not hold it; its ack reaches the page once.
  updateConfig(update) {
    const updateId = update.updateId || `u${++this.updates}`;
    this._control("updateConfig", { updateConfig: { ...update, updateId } }, updateId);
    return updateId;
  }

  _control(kind, message, id) {
    if (this.state === "ended" || this.state === "failed" || this.closeAsked) {
      throw new Error(`the session is ${this.closeAsked ? "closing" : this.state}: no ${kind}`);
    }
    const at = this.keptStart + this.keptBytes;
    this.controls.push({ kind, message, id, at, accepted: false });
    if (this.state === "live") this.socket.send(JSON.stringify(message));
  }

  // Ends the input: the results of the audio sent still come, then the summary.
  close() {
    this.closeAsked = true;
    if (this.state === "live") this.socket.send(JSON.stringify({ close: {} }));
    else if (this.state !== "reconnecting" && this.state !== "connecting") this._set("ended");
  }

  // The config goes in the query of a session's first connection only: on a resume it is in
  // the token (a query-string config would start a new session).
  _path(first) {
    return "/v1/stt/stream" + (first ? "?" + new URLSearchParams(this.config).toString() : "");
  }

  _opened(socket, first) {
    if (!first) {
      // No config on a resume: it is in the token. Then the audio from the ack on, then live.
      const resume = { resumeToken: this.resumeToken, ack: this.ack || {} };
      socket.send(JSON.stringify({ start: { resume } }));
    }
    // The audio from the ack on, with the finalizes and updates still due at their places.
    const due = this._due();
    const sendDue = (upTo) => {
      while (due.length && due[0].at <= upTo) socket.send(JSON.stringify(due.shift().message));
    };
    const from = this._ackByte();
    let at = this.keptStart;
    let sent = 0;
    for (const buffer of this.kept) {
      const end = at + buffer.byteLength;
      if (end > from) {
        const piece = from > at ? buffer.slice(from - at) : buffer;
        sendDue(Math.max(at, from));
        socket.send(piece);
        sent += piece.byteLength;
      }
      at = end;
    }
    sendDue(Infinity);
    // What went again (on a resume) or first (audio the microphone gave while connecting).
    this.replayedMs = Math.round(sent / this.frameBytes * 1000 / this.rate);
    this.attempt = 0;
    this._set("live", first ? "" : `resumed: ${this.replayedMs} ms of audio sent again`);
    if (this.closeAsked) socket.send(JSON.stringify({ close: {} }));
  }

  // Controls a new connection must be sent: every one not answered yet, and the accepted
  // updates the resume token does not hold; by audio position.
  _due() {
    let rank = 0;
    const due = this.controls.filter((c) => !c.accepted || rank++ >= this.tokenCovers);
    return due.sort((x, y) => x.at - y.at);
  }

  // Whether an utterance's event is news (its index past the last reported), and the new last.
  _news(event, seen) {
    const found = /^u(\d+)$/.exec(event.utteranceId || "");
    if (!found) return [true, seen];
    const index = Number(found[1]);
    return index > seen ? [true, index] : [false, seen];
  }

  // A finalize or update answered: whether the page has not had this answer yet. An answered
  // finalize leaves the controls, so it is never sent again and its answer comes once (a
  // connection handed over is not read); an accepted update stays, and a second answer to it
  // is one for the resume token only.
  _settle(kind, id, accepted) {
    const i = this.controls.findIndex((c) => c.kind === kind && c.id === id);
    if (i < 0) return true;
    const control = this.controls[i];
    if (control.accepted) return false;  // sent again after a resume: its answer was had
    if (kind === "updateConfig" && accepted) control.accepted = true;
    else this.controls.splice(i, 1);
    return true;
  }

  _bytes(ms) { return Math.floor(ms * this.rate / 1000) * this.frameBytes; }

  // The first byte not covered by the last ack: frame floor(ms x rate / 1000) (docs/edge.md).
  _ackByte() {
    return this._bytes(this.ack ? Number(this.ack.finalizedThroughMs || 0) : 0);
  }

  _trim() {
    const from = this._ackByte();
    while (this.kept.length && this.keptStart + this.kept[0].byteLength <= from) {
      const buffer = this.kept.shift();
      this.keptStart += buffer.byteLength;
      this.keptBytes -= buffer.byteLength;
    }
  }

  _message(socket, event) {
    if (socket !== this.socket) return;  // a connection handed over: nothing more counts
    const msg = JSON.parse(event.data);
    if (msg.session) {
      this.sessionId = msg.session.sessionId;
      const window = msg.session.limits && msg.session.limits.replayWindow;  // JSON: "30s"
      if (!this.maxKeptMs && window) this.maxKeptBytes = this._bytes(2000 * parseFloat(window));
      if (msg.session.resumeToken) this.resumeToken = msg.session.resumeToken;
      if (msg.session.resumes !== undefined) this.resumes = Number(msg.session.resumes);
    }
    if (msg.ack) {
      this.ack = msg.ack;
      this._trim();
    }
    if (msg.error) this.lastError = msg.error;
    let fresh = true;
    if (msg.started) {
      fresh = !this.startedSeen;
      this.startedSeen = true;
    }
    if (msg.speechStarted) [fresh, this.speechSeen] = this._news(msg.speechStarted, this.speechSeen);
    if (msg.utteranceEnd) [fresh, this.endsSeen] = this._news(msg.utteranceEnd, this.endsSeen);
    if (msg.finalizeAck) fresh = this._settle("finalize", msg.finalizeAck.finalizeId || "", true);
    if (msg.updateConfigAck) {
      const ack = msg.updateConfigAck;
      fresh = this._settle("updateConfig", ack.updateId || "", ack.accepted === true);
    }
    if (fresh) this.onMessage(msg);
    else if (msg.ack) this.onMessage({ ack: msg.ack });  // the ack it carried still counts
    if (msg.goingAway) {
      // Hand over at once: the old connection's later messages are not read (the new
      // gateway answers from the ack), and its close is not waited for. The going-away token
      // holds the updates accepted so far.
      if (msg.goingAway.resumeToken) this.resumeToken = msg.goingAway.resumeToken;
      this.tokenCovers = this.controls.filter((c) => c.accepted).length;
      this._away(msg.goingAway.reconnectNow ? 0 : Math.random() * 100);
      socket.close(1000);
    }
  }

  _fail(why) {
    this.kept = [];  // what the failure leaves is not held on to
    this.keptBytes = 0;
    super._fail(why);
  }
}

// A TTS session on WS /v1/tts/stream whose contexts survive a gateway restart, a drain or a
// dropped connection (docs/edge.md, "Resume"; design: docs/design/browser-client.md). The
// Python SDK (voxwire.client.tts) does the same for servers.
//
//   const tts = new TtsSession({ url, getToken, onEvent, onState, leadMs: 1000 });
//   tts.start();
//   tts.open("turn-1", { model: "tts_espeak", wordTimestamps: true,
//                        outputFormat: { encoding: "AUDIO_ENCODING_PCM_S16LE", sampleRateHz: 24000 } });
//   tts.append("turn-1", "Hello there."); tts.closeContext("turn-1"); ... tts.close();
//
// onEvent(contextId, event): the server's message for the context ({opened}, {words}, {done},
// ...), or {audio: {sequenceNumber, startMs, durationMs}, data: ArrayBuffer} for a chunk (its
// samples, without the frame header). After a resume nothing comes twice: sequence numbers
// and the timeline go on, a word cut in the middle is spoken again from its start and its
// timestamp comes then, word text offsets count from the context's first text. An SSML
// context (textFormat TEXT_FORMAT_SSML: the text up to each flush or the close is one
// <speak> document) cannot be cut after a word: its first document not yet all heard is
// spoken again from its start, the server told how much of its audio came (skipAudioMs), and
// any of that audio it sends again anyway is dropped here (as voxwire.replay.TextReplay does).
export class TtsSession extends ResumableSession {
  constructor({ url, getToken, onEvent = () => {}, onState = () => {}, leadMs = null,
                reconnectWithinMs = 30000 }) {
    super({ url, getToken, onState, reconnectWithinMs });
    this.onEvent = onEvent;
    this.leadMs = leadMs;
    this.contexts = new Map();  // id -> the context's resumable state (open)
    this.handles = new Map();   // handle of the current connection -> context
    this.maxPendingTextBytes = 0;  // the session's limits: what a context holds unspoken
    this.pieceBytes = 0;           // set to choose the pieces' size; 0: from the limits
  }

  get _piece() { return this.pieceBytes || pieceBytes(this.maxPendingTextBytes); }

  open(contextId, config) {
    if (this.contexts.has(contextId)) throw new Error(`context ${contextId} is already open`);
    const bytes = sampleBytes(config.outputFormat && config.outputFormat.encoding);
    if (!bytes) throw new Error("open: outputFormat.encoding is required (docs/edge.md)");
    this.contexts.set(contextId, {
      id: contextId, config, bytesPerMs: bytes * Number(config.outputFormat.sampleRateHz) / 1000,
      text: [],          // code points not yet spoken, from position `base` of the whole text
      base: 0,
      spokenTo: 0,       // end of the last word whose audio was received completely
      pending: [],       // words whose audio is not all in: {end, offset, length}
      audioEnd: 0,       // end of the audio received, on the context's timeline (ms)
      lastSeq: 0,
      wordBase: 0,       // added to the current connection's word offsets (after a resume)
      reportedTo: 0,     // end (code points) of the last word passed on
      words: [],         // the words passed on: what a truncate heard
      flushes: [],       // unacknowledged flushes: {id, at} (whole-text position)
      closed: false, stop: null, opened: false, handle: -1,
      ssml: config.textFormat === "TEXT_FORMAT_SSML",
      documentMs: 0,     // SSML: where the first document not yet all heard starts (ms)
      skipTo: null,      // SSML, after a reopening: audio before this (ms) came already
      wordsTo: 0,        // end of the last word timestamp received (ms): every word by it came
      seqShift: 0,       // the new connection's sequence numbers less those passed on
      queue: [],         // long text's rest, and the flushes and close given after it
      waiting: new Set(),  // flush ids sent by the queue, not acknowledged yet
      pieces: 0, closing: false,
    });
    this._send({ contextId, open: config });
  }

  // Text of any length: what is longer than a piece goes in pieces as the server speaks them
  // (textPieces), and text, flushes and the close given meanwhile wait their turn.
  append(contextId, text) {
    const ctx = this._writable(contextId);
    const piece = [...ctx.waiting].some((id) => id.startsWith(PIECE_FLUSH));
    if (!ctx.queue.length && !piece && bytesOf(text) <= this._piece) {
      this._appendNow(ctx, text);
      return;
    }
    if (typeof ctx.queue[ctx.queue.length - 1] === "string") ctx.queue[ctx.queue.length - 1] += text;
    else ctx.queue.push(text);
    this._feed(ctx);
  }

  flush(contextId, flushId = "") {
    const ctx = this._writable(contextId);
    if (!ctx.queue.length) { this._flushNow(ctx, flushId); return; }
    ctx.queue.push({ flush: flushId });
    this._feed(ctx);
  }

  closeContext(contextId) {
    const ctx = this._writable(contextId);
    ctx.closing = true;
    if (!ctx.queue.length) { this._closeNow(ctx); return; }
    ctx.queue.push({ close: true });
    this._feed(ctx);
  }

  _appendNow(ctx, text) {
    ctx.text = ctx.text.concat(Array.from(text));  // offsets are code points (docs/edge.md)
    this._send({ contextId: ctx.id, append: { text } });
  }

  _flushNow(ctx, flushId) {
    ctx.flushes.push({ id: flushId, at: ctx.base + ctx.text.length });
    this._send({ contextId: ctx.id, flush: { flushId } });
  }

  _closeNow(ctx) {
    ctx.closed = true;
    this._send({ contextId: ctx.id, close: {} });
  }

  // What the queue lets out now (voxwire.text_pieces.TextFeed.more): while fewer than two of
  // its flushes wait for their ack.
  _feed(ctx) {
    while (ctx.queue.length && ctx.waiting.size < 2) {
      const item = ctx.queue[0];
      if (item.close) { ctx.queue.shift(); this._closeNow(ctx); continue; }
      if (typeof item !== "string") {
        ctx.queue.shift();
        ctx.waiting.add(item.flush);
        this._flushNow(ctx, item.flush);
        continue;
      }
      if (bytesOf(item) <= this._piece) {  // a piece at most, a flush, a close or nothing behind
        ctx.queue.shift();
        this._appendNow(ctx, item);
        continue;
      }
      const first = item.slice(0, pieceEnd(item, this._piece));  // the first piece only
      ctx.queue[0] = item.slice(first.length);
      const flushId = `${PIECE_FLUSH}${++ctx.pieces}`;
      ctx.waiting.add(flushId);
      this._appendNow(ctx, first);
      this._flushNow(ctx, flushId);
    }
  }

  // Barge-in. False when the context has ended already (its `done` came before the listener
  // heard it all): nothing is left to stop (docs/edge.md, truncation).
  cancel(contextId) { return this._stop(contextId, { contextId, cancel: {} }); }

  truncate(contextId, playedMs) {
    return this._stop(contextId, { contextId, truncate: { playedMs: Math.max(0, Math.floor(playedMs)) } });
  }

  // Ends the session's input: open contexts finish, then the summary and close 1000.
  close() {
    this.closeAsked = true;
    this._send({ closeSession: {} });
    if (this.state === "idle") this._set("ended");
  }

  _stop(contextId, message) {
    const ctx = this.contexts.get(contextId);
    if (!ctx) return false;
    ctx.queue = [];  // the rest of a long text is not sent
    ctx.stop = message;  // never reopened after this (a zombie context would speak on)
    this._send(message);
    return true;
  }

  _writable(contextId) {
    const ctx = this.contexts.get(contextId);
    if (!ctx) throw new Error(`no open context ${contextId}`);
    if (ctx.closed || ctx.closing || ctx.stop) throw new Error(`context ${contextId} is closed: no more text`);
    return ctx;
  }

  // Sent when live; otherwise the next connection sends it from the state (_opened).
  _send(message) {
    if (this.state === "live") this.socket.send(JSON.stringify(message));
  }

  // The options go in the first message (start), the same on every connection.
  _path() { return "/v1/tts/stream"; }

  _opened(socket) {
    const start = { audioDelivery: "AUDIO_DELIVERY_BINARY" };
    if (this.leadMs !== null) start.lead = `${this.leadMs / 1000}s`;
    if (this.resumeToken) start.resume = { resumeToken: this.resumeToken };
    const send = (message) => socket.send(JSON.stringify(message));
    send({ start });
    this.handles.clear();
    // Every unfinished context (re)opened where its audio received ends, with the text after
    // its last word heard whole, its unacknowledged flushes at their places, and its close.
    for (const ctx of [...this.contexts.values()]) {
      if (ctx.stop) { this._endStopped(ctx); continue; }
      ctx.pending = [];
      ctx.wordBase = ctx.base;
      ctx.seqShift = 0;
      // Plain text goes on where its audio stopped; an SSML document from its start, the
      // audio of it that came skipped (docs/contract.md, "Resuming"), with timestamps only as
      // far as the words received reach: a word's timestamp can come after audio past its end,
      // and the server sends none that end within the skip. What it sends again is dropped.
      let have = ctx.audioEnd;
      if (ctx.config.wordTimestamps) have = Math.min(have, Math.max(ctx.documentMs, ctx.wordsTo));
      const skip = ctx.ssml ? have - ctx.documentMs : 0;
      ctx.skipTo = ctx.ssml && ctx.audioEnd > ctx.documentMs ? ctx.audioEnd : null;
      const config = !ctx.lastSeq ? ctx.config : { ...ctx.config,
        timelineOffsetMs: ctx.ssml ? ctx.documentMs : ctx.audioEnd,
        firstSequenceNumber: ctx.lastSeq + 1, ...(skip > 0 ? { skipAudioMs: skip } : {}) };
      send({ contextId: ctx.id, open: config });
      let at = 0;
      for (const flush of ctx.flushes) {
        const place = Math.max(0, flush.at - ctx.base);
        if (place > at) send({ contextId: ctx.id, append: { text: ctx.text.slice(at, place).join("") } });
        at = Math.max(at, place);
        send({ contextId: ctx.id, flush: { flushId: flush.id } });
      }
      if (at < ctx.text.length) send({ contextId: ctx.id, append: { text: ctx.text.slice(at).join("") } });
      if (ctx.closed) send({ contextId: ctx.id, close: {} });
    }
    if (this.closeAsked) send({ closeSession: {} });
    this.attempt = 0;
    this._set("live", this.resumeToken ? "resumed" : "");
  }

  // A context the client stopped is not reopened: it ends here, with the event the gateway
  // would have sent (its stop, or its answer, may have died with the connection).
  _endStopped(ctx) {
    const last = ctx.lastSeq;
    const event = ctx.stop.truncate
      ? { truncated: { playedMs: ctx.stop.truncate.playedMs, lastSequenceNumber: last,
                       heard: ctx.words.filter((w) => Number(w.endMs || 0) <= ctx.stop.truncate.playedMs) } }
      : { cancelled: { lastSequenceNumber: last } };
    this.contexts.delete(ctx.id);
    this.onEvent(ctx.id, event);
  }

  _message(socket, event) {
    if (socket !== this.socket) return;  // a connection handed over: nothing more counts
    if (event.data instanceof ArrayBuffer) { this._frame(event.data); return; }
    let msg = JSON.parse(event.data);
    if (msg.session) {
      this.sessionId = msg.session.sessionId;
      if (msg.session.resumeToken) this.resumeToken = msg.session.resumeToken;
      if (msg.session.resumes !== undefined) this.resumes = Number(msg.session.resumes);
      this.maxPendingTextBytes = Number((msg.session.limits || {}).maxPendingTextBytes || 0);
      this.onEvent("", msg);
      return;
    }
    if (msg.goingAway) {
      if (msg.goingAway.resumeToken) this.resumeToken = msg.goingAway.resumeToken;
      if (!this.closeAsked) {
        this._away(msg.goingAway.reconnectNow ? 0 : Math.random() * 100);
        socket.close(1000);
      }
      return;
    }
    if (msg.error) { this.lastError = msg.error; this.onEvent("", msg); return; }
    if (msg.summary) { this.onEvent("", msg); return; }
    const ctx = msg.contextId ? this.contexts.get(msg.contextId) : null;
    if (!ctx) {
      if (!msg.contextId) this.onEvent("", msg);  // a session notice
      return;  // an ended context's late message
    }
    if (msg.opened) {
      ctx.handle = msg.opened.handle;
      this.handles.set(ctx.handle, ctx);
      if (ctx.opened) return;  // reopened on a resume: not news
      ctx.opened = true;
    } else if (msg.words) {
      const words = [];
      for (const word of msg.words.words || []) {
        const length = Number(word.textLength || 0);
        if (!length) { words.push(word); continue; }
        const offset = Number(word.textOffset || 0) + ctx.wordBase;
        ctx.pending.push({ offset, length, end: Number(word.endMs || 0) });
        ctx.wordsTo = Math.max(ctx.wordsTo, Number(word.endMs || 0));
        this._advance(ctx);
        if (offset < ctx.reportedTo) continue;  // spoken again after a resume: passed on
        ctx.reportedTo = offset + length;
        const copy = { ...word, textOffset: offset };
        ctx.words.push(copy);
        words.push(copy);
      }
      if (!words.length) return;
      msg.words = { ...msg.words, words };
    } else if (msg.flushAck) {
      const id = msg.flushAck.flushId || "";
      const i = ctx.flushes.findIndex((f) => f.id === id);
      if (i >= 0) {
        const [flush] = ctx.flushes.splice(i, 1);
        if (ctx.ssml) {  // the document before it is all heard (its words too): never again
          this._cut(ctx, flush.at);
          ctx.documentMs = ctx.audioEnd;
          ctx.wordsTo = Math.max(ctx.wordsTo, ctx.audioEnd);
        }
      }
      ctx.waiting.delete(id);
      this._feed(ctx);  // room for the next piece
      if (id.startsWith(PIECE_FLUSH)) return;  // a piece's own flush: not the page's news
    } else if (msg.done || msg.cancelled || msg.truncated || msg.contextError) {
      this.contexts.delete(ctx.id);
      this.handles.delete(ctx.handle);
    }
    const key = ["flushAck", "done", "cancelled", "truncated"].find((k) => msg[k]);
    if (key && msg[key].lastSequenceNumber !== undefined && (ctx.skipTo !== null || ctx.seqShift)) {
      // Named as the chunks passed on are (_frame); while audio sent again is still being
      // dropped, the last chunk received (voxwire.replay.TextReplay.number).
      const last = Number(msg[key].lastSequenceNumber);
      const number = ctx.skipTo !== null ? Math.min(last, ctx.lastSeq) : Math.max(0, last - ctx.seqShift);
      msg = { ...msg, [key]: { ...msg[key], lastSequenceNumber: number } };
    }
    this.onEvent(ctx.id, msg);
  }

  // A binary audio frame: 12-byte header (docs/edge.md, "Binary audio frames"), then samples.
  _frame(data) {
    const view = new DataView(data);
    const ctx = this.handles.get(view.getUint16(2));
    if (!ctx) return;
    let sequenceNumber = view.getUint32(4), startMs = view.getUint32(8);
    let samples = data.slice(12);
    let durationMs = Math.round(samples.byteLength / ctx.bytesPerMs);
    if (ctx.skipTo !== null) {
      // An SSML document spoken again from its start: what came before the reopening is
      // dropped (a server that honours skipAudioMs sends none of it), the rest numbered on.
      if (startMs + durationMs <= ctx.skipTo) return;
      const cutMs = Math.max(0, ctx.skipTo - startMs);
      const frameBytes = sampleBytes(ctx.config.outputFormat.encoding);
      samples = samples.slice(Math.floor(cutMs * ctx.bytesPerMs / frameBytes) * frameBytes);
      ctx.seqShift = sequenceNumber - (ctx.lastSeq + 1);
      ctx.skipTo = null;
      startMs += cutMs;
      durationMs = Math.max(0, durationMs - cutMs);
    }
    sequenceNumber -= ctx.seqShift;
    if (sequenceNumber <= ctx.lastSeq) return;  // received before a resume
    ctx.lastSeq = sequenceNumber;
    ctx.audioEnd = Math.max(ctx.audioEnd, startMs + durationMs);
    this._advance(ctx);
    this.onEvent(ctx.id, { audio: { sequenceNumber, startMs, durationMs }, data: samples });
  }

  // Words whose audio is all in are spoken: the text up to the last of them is dropped
  // (SSML: a document is dropped whole, when its flush is acknowledged).
  _advance(ctx) {
    const done = ctx.pending.filter((w) => w.end <= ctx.audioEnd);
    if (!done.length) return;
    ctx.pending = ctx.pending.filter((w) => w.end > ctx.audioEnd);
    if (ctx.ssml) return;
    for (const w of done) ctx.spokenTo = Math.max(ctx.spokenTo, w.offset + w.length);
    this._cut(ctx, ctx.spokenTo);
  }

  // The text before whole-text position `at` will not be spoken again.
  _cut(ctx, at) {
    const cut = Math.min(Math.max(0, at - ctx.base), ctx.text.length);
    ctx.text = ctx.text.slice(cut);
    ctx.base += cut;
  }
}

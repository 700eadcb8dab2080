// voxwire browser client: an STT session on WS /v1/stt/stream that survives a gateway restart,
// a drain or a dropped connection (docs/edge.md, "Acknowledgements and resume"; design:
// docs/design/browser-client.md). The Python SDK (voxwire.client) does the same for servers.
//
//   const stt = new SttSession({ url: "wss://gw.example", getToken, onMessage,
//                                config: { model: "stt_pocketsphinx", encoding: "pcm_s16le",
//                                          sample_rate: 16000, interim_results: true } });
//   stt.start(); stt.send(pcm16ArrayBuffer) ...; stt.close();
//
// getToken() returns a fresh browser token for each connection (the page's backend mints them
// with POST /v1/auth/token; a token is good for one connection). The audio sent after the
// server's last ack is kept, and only that: on a resume it goes again from the ack, so no word
// is lost or repeated.
"use strict";

const SAMPLE_BYTES = { pcm_s16le: 2, linear16: 2, pcm_f32le: 4, mulaw: 1, alaw: 1 };
// Closes after which the session goes on elsewhere (docs/edge.md, "Lifecycle"): going away,
// a connection lost without a close, service restart (drain), try again later, too long.
const RESUMABLE_CLOSES = new Set([1001, 1006, 1012, 1013, 4009]);

export class SttSession {
  constructor({ url, config, getToken, onMessage = () => {}, onState = () => {},
                reconnectWithinMs = 30000, maxKeptMs = 0 }) {
    this.url = url.replace(/\/$/, "");
    this.config = config;
    this.getToken = getToken;
    this.onMessage = onMessage;
    this.onState = onState;
    this.reconnectWithinMs = reconnectWithinMs;
    const sampleBytes = SAMPLE_BYTES[config.encoding];
    if (!sampleBytes) throw new Error(`unknown encoding ${config.encoding}`);
    this.frameBytes = sampleBytes * (Number(config.channels) || 1);
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
    this.resumeToken = "";
    this.sessionId = "";
    this.resumes = 0;
    this.replayedMs = 0;
    this.socket = null;
    this.state = "idle";      // idle, connecting, live, reconnecting, ended, failed
    this.lastError = null;    // the server's last error event
    this.awaySince = 0;
    this.attempt = 0;
    this.lastClose = "";      // how the last connection ended, for a failure's message
    this.closeAsked = false;
  }

  start() { this._connect(); }

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

  // Ends the input: the results of the audio sent still come, then the summary.
  close() {
    this.closeAsked = true;
    if (this.state === "live") this.socket.send(JSON.stringify({ close: {} }));
    else if (this.state !== "reconnecting" && this.state !== "connecting") this._set("ended");
  }

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
    const query = first ? "?" + new URLSearchParams(this.config).toString() : "";
    const socket = new WebSocket(`${this.url}/v1/stt/stream${query}`,
                                 ["voxwire.v1", `voxwire.token.${token}`]);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.onopen = () => this._opened(socket, first);
    socket.onmessage = (event) => this._message(socket, event);
    socket.onclose = (event) => this._closed(socket, event);
  }

  _opened(socket, first) {
    if (!first) {
      // No config on a resume: it is in the token. Then the audio from the ack on, then live.
      const resume = { resumeToken: this.resumeToken, ack: this.ack || {} };
      socket.send(JSON.stringify({ start: { resume } }));
    }
    const from = this._ackByte();
    let at = this.keptStart;
    let sent = 0;
    for (const buffer of this.kept) {
      const end = at + buffer.byteLength;
      if (end > from) {
        const piece = from > at ? buffer.slice(from - at) : buffer;
        socket.send(piece);
        sent += piece.byteLength;
      }
      at = end;
    }
    // What went again (on a resume) or first (audio the microphone gave while connecting).
    this.replayedMs = Math.round(sent / this.frameBytes * 1000 / this.rate);
    this.attempt = 0;
    this._set("live", first ? "" : `resumed: ${this.replayedMs} ms of audio sent again`);
    if (this.closeAsked) socket.send(JSON.stringify({ close: {} }));
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
    this.onMessage(msg);
    if (msg.goingAway) {
      // Hand over at once: the old connection's later messages are not read (the new
      // gateway answers from the ack), and its close is not waited for.
      if (msg.goingAway.resumeToken) this.resumeToken = msg.goingAway.resumeToken;
      this._away(msg.goingAway.reconnectNow ? 0 : Math.random() * 100);
      socket.close(1000);
    }
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
    // starts it again (with the config), and everything kept goes first.
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
    this.kept = [];
    this.keptBytes = 0;
    this._set("failed", why);
  }
}

// Two ways to carry the same events: a WebSocket (default) that reconnects and
// resumes by itself, and SSE on /v1/speculate/{id}/events, read with fetch (so the API
// key goes as a header, which EventSource cannot send) and resumed after a drop from
// the last event seen (?after=). Both call onEvent(event) for every event of a request
// exactly once, in seq order (protocol.js's Sequence drops what a resumed stream
// replays), and stop following at the stream's final end.

import { apiFetch, subprotocols } from "./keys.js";
import { Sequence, StreamEnd } from "./protocol.js";

// Full jitter: a delay drawn uniformly from [0, min(cap, base * 2^attempt)] (the same
// rule as full_jitter in speculate/core/circuit.py).
export function fullJitter(attempt, baseMs = 250, capMs = 5000) {
  return Math.random() * Math.min(capMs, baseMs * 2 ** attempt);
}

export function newRequestId() {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `ui-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`;
}

export class WebSocketTransport {
  constructor(url, { onStatus = () => {}, onRefused = () => {} } = {}) {
    this.url = url;
    this.onStatus = onStatus;
    this.onRefused = onRefused;
    this.requests = new Map(); // request_id -> {onEvent, sequence, end, sent}
    this.socket = null;
    this.attempt = 0;
    this.opened = null;
  }

  connect() {
    if (this.opened) return this.opened;
    this.opened = new Promise((resolve) => {
      const socket = new WebSocket(this.url, subprotocols());
      this.socket = socket;
      let opened = false;
      socket.addEventListener("open", () => {
        opened = true;
        this.attempt = 0;
        this.onStatus("connected");
        // Pick up every unfinished request where we left it, and send those that never
        // went out (the first connection failed, say for want of a key).
        for (const [id, req] of this.requests) {
          if (req.sent) socket.send(JSON.stringify({ type: "resume", request_id: id, after: req.sequence.last }));
          else this.send(socket, id, req);
        }
        resolve(socket);
      });
      socket.addEventListener("message", (message) => {
        const event = JSON.parse(message.data);
        const req = this.requests.get(event.request_id);
        if (!req || !req.sequence.accept(event)) return;
        req.onEvent(event);
        if (req.end.see(event) === "final") this.requests.delete(event.request_id);
      });
      socket.addEventListener("close", () => {
        this.opened = null;
        this.socket = null;
        // A refused handshake looks like any failed connection here: ask the server
        // whether it wants a key (apiFetch raises the page's key prompt on 401).
        if (!opened) apiFetch("/v1/models").catch(() => {});
        if (this.requests.size === 0) {
          this.onStatus("idle");
          return;
        }
        const delay = fullJitter(this.attempt++);
        this.onStatus("reconnecting");
        setTimeout(() => this.connect(), delay);
      });
    });
    return this.opened;
  }

  async start(requestId, body, onEvent) {
    const req = { onEvent, sequence: new Sequence(), end: new StreamEnd(), sent: false, body };
    this.requests.set(requestId, req);
    const socket = await this.connect();
    if (!req.sent) this.send(socket, requestId, req);
  }

  send(socket, requestId, req) {
    socket.send(JSON.stringify({ type: "speculate", request_id: requestId, ...req.body }));
    req.sent = true;
  }

  async cancel(requestId) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "cancel", request_id: requestId }));
    }
  }

  // A new key: connect again with it (unfinished requests resume on the new socket).
  reconnect() {
    if (this.socket) this.socket.close();
    else if (this.requests.size) this.connect();
  }
}

// Server-sent events from a fetch response body: {event, data, id} per message.
async function* sseMessages(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, ""));
      if (data.length) yield data.join("\n");
    }
  }
}

export class SSETransport {
  constructor(base = "") {
    this.base = base;
    this.following = new Map(); // request id -> AbortController
  }

  async start(requestId, body, onEvent) {
    const response = await apiFetch(`${this.base}/v1/speculate`, {
      method: "POST",
      headers: { "content-type": "application/json", prefer: "respond-async" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) {
      onEvent({ event: "error", request_id: requestId, seq: 1, code: answer.error.code,
                message: answer.error.message, source: "client", fatal: true });
      return null;
    }
    this.follow(answer.request_id, onEvent);
    return answer.request_id;
  }

  // Follow a request's events from the first (a reload picks a running request up
  // this way), reconnecting after a drop from the last one seen. `onLost(why)`: the
  // server does not have the request (any more).
  async follow(requestId, onEvent, onLost = () => {}) {
    const sequence = new Sequence();
    const end = new StreamEnd();
    const abort = new AbortController();
    this.following.set(requestId, abort);
    const url = `${this.base}/v1/speculate/${encodeURIComponent(requestId)}/events`;
    for (let attempt = 0; !abort.signal.aborted; ) {
      try {
        const response = await apiFetch(`${url}?after=${sequence.last}`, { signal: abort.signal });
        if (response.status === 404) {
          onLost("the server no longer has this request");
          break;
        }
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        for await (const data of sseMessages(response)) {
          attempt = 0;
          const event = JSON.parse(data);
          if (!sequence.accept(event)) continue;
          onEvent(event);
          // After a provisional done the server ends this response; the next one
          // carries the refinement.
          if (end.see(event) === "final") abort.abort();
        }
      } catch (error) {
        if (abort.signal.aborted) break;
      }
      if (!abort.signal.aborted) await new Promise((r) => setTimeout(r, fullJitter(attempt++)));
    }
    this.following.delete(requestId);
  }

  async cancel(requestId) {
    await apiFetch(`${this.base}/v1/requests/${encodeURIComponent(requestId)}`, { method: "DELETE" });
  }
}

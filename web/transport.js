// Two ways to carry the same events: a WebSocket (default) that reconnects and
// resumes by itself, and SSE through EventSource on /v1/speculate/{id}/events, which
// reconnects by itself and resumes with Last-Event-ID. Both call onEvent(event) for
// every event of a request exactly once, in seq order (protocol.js's Sequence drops what
// a resumed stream replays), and stop following at the stream's final end.

import { EVENT_TYPES, Sequence, StreamEnd } from "./protocol.js";

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
  constructor(url, { onStatus = () => {} } = {}) {
    this.url = url;
    this.onStatus = onStatus;
    this.requests = new Map(); // request_id -> {onEvent, sequence, end, sent}
    this.socket = null;
    this.attempt = 0;
    this.opened = null;
  }

  connect() {
    if (this.opened) return this.opened;
    this.opened = new Promise((resolve) => {
      const socket = new WebSocket(this.url);
      this.socket = socket;
      socket.addEventListener("open", () => {
        this.attempt = 0;
        this.onStatus("connected");
        // Pick up every unfinished request where we left it.
        for (const [id, req] of this.requests) {
          if (req.sent) socket.send(JSON.stringify({ type: "resume", request_id: id, after: req.sequence.last }));
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
    const req = { onEvent, sequence: new Sequence(), end: new StreamEnd(), sent: false };
    this.requests.set(requestId, req);
    const socket = await this.connect();
    socket.send(JSON.stringify({ type: "speculate", request_id: requestId, ...body }));
    req.sent = true;
  }

  async cancel(requestId) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ type: "cancel", request_id: requestId }));
    }
  }
}

export class SSETransport {
  constructor(base = "") {
    this.base = base;
    this.sources = new Map();
  }

  async start(requestId, body, onEvent) {
    const response = await fetch(`${this.base}/v1/speculate`, {
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
    const sequence = new Sequence();
    const end = new StreamEnd();
    const source = new EventSource(`${this.base}${answer.events}`);
    this.sources.set(answer.request_id, source);
    const handle = (message) => {
      // EventSource fires its own "error" (no data) when the connection drops; it
      // reconnects by itself with Last-Event-ID, so only our error events matter.
      if (typeof message.data !== "string") return;
      const event = JSON.parse(message.data);
      if (!sequence.accept(event)) return;
      onEvent(event);
      // After a provisional done the server ends this response; EventSource reconnects
      // with Last-Event-ID and the refinement arrives on the new one.
      if (end.see(event) === "final") {
        source.close();
        this.sources.delete(event.request_id);
      }
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, handle);
    return answer.request_id;
  }

  async cancel(requestId) {
    await fetch(`${this.base}/v1/requests/${encodeURIComponent(requestId)}`, { method: "DELETE" });
  }
}

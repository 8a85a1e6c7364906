// Two ways to carry the same events: a WebSocket (default) that reconnects and
// resumes by itself, and SSE through EventSource on /v1/speculate/{id}/events, which
// reconnects by itself and resumes with Last-Event-ID. Both call onEvent(event) for
// every event of a request exactly once, in seq order (ShownText drops replays).

const TERMINAL = (e) => e.event === "done" || (e.event === "error" && e.fatal);

// Is this the stream's last event? A "done" after "queued" is provisional: the queued
// refinement arrives later on the same request, so keep following it.
function ends(tracker, event) {
  if (event.event === "queued") tracker.queued = true;
  if (event.event === "done" && tracker.queued && !tracker.provisional) {
    tracker.provisional = true;
    return false;
  }
  return TERMINAL(event);
}
const EVENT_TYPES = ["start", "draft", "patch", "commit", "queued", "error", "done"];

export function newRequestId() {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `ui-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`;
}

export class WebSocketTransport {
  constructor(url, { onStatus = () => {} } = {}) {
    this.url = url;
    this.onStatus = onStatus;
    this.requests = new Map(); // request_id -> {onEvent, lastSeq, body}
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
          if (req.sent) socket.send(JSON.stringify({ type: "resume", request_id: id, after: req.lastSeq }));
        }
        resolve(socket);
      });
      socket.addEventListener("message", (message) => {
        const event = JSON.parse(message.data);
        const req = this.requests.get(event.request_id);
        if (!req || event.seq <= req.lastSeq) return;
        req.lastSeq = event.seq;
        req.onEvent(event);
        if (ends(req, event)) this.requests.delete(event.request_id);
      });
      socket.addEventListener("close", () => {
        this.opened = null;
        this.socket = null;
        if (this.requests.size === 0) {
          this.onStatus("idle");
          return;
        }
        // Full jitter backoff: 0..min(5 s, 250 ms * 2^attempt).
        const delay = Math.random() * Math.min(5000, 250 * 2 ** this.attempt++);
        this.onStatus("reconnecting");
        setTimeout(() => this.connect(), delay);
      });
    });
    return this.opened;
  }

  async start(requestId, body, onEvent) {
    const req = { onEvent, lastSeq: 0, sent: false };
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
    let lastSeq = 0;
    const tracker = {};
    const source = new EventSource(`${this.base}${answer.events}`);
    this.sources.set(answer.request_id, source);
    const handle = (message) => {
      // EventSource fires its own "error" (no data) when the connection drops; it
      // reconnects by itself with Last-Event-ID, so only our error events matter.
      if (typeof message.data !== "string") return;
      const event = JSON.parse(message.data);
      if (event.seq <= lastSeq) return;
      lastSeq = event.seq;
      onEvent(event);
      // After a provisional done the server ends this response; EventSource reconnects
      // with Last-Event-ID and the refinement arrives on the new one.
      if (ends(tracker, event)) {
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

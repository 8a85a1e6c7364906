// The chat page: conversation history, the composer, transports, cloud state.

import { Answer } from "./answer.js";
import { newRequestId, SSETransport, WebSocketTransport } from "./transport.js";

const $ = (selector) => document.querySelector(selector);

class App {
  constructor() {
    this.history = []; // [{role, content}], sent as `messages`
    this.answers = new Map(); // request id -> Answer (for tools and tests)
    this.current = null;
    this.conversation = $("#conversation");
    this.input = $("#prompt");
    this.stop = $("#stop");
    this.cloud = $("#cloud-state");
    const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
    this.transports = {
      ws: new WebSocketTransport(wsUrl, { onStatus: (s) => this.setLink(s) }),
      sse: new SSETransport(),
    };
    $("#composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.send();
      }
    });
    // While the next question is typed, the conversation so far goes ahead: the edge
    // evaluates it and the cloud's prefix cache takes it in, so Enter pays for the new
    // turn only. Once per turn, a short pause into typing.
    this.prewarmedTurns = 0;
    this.prewarmTimer = null;
    this.input.addEventListener("input", () => this.schedulePrewarm());
    this.stop.addEventListener("click", () => this.cancel());
    $("#new-chat").addEventListener("click", () => this.newChat());
    this.theme = $("#theme");
    this.theme.addEventListener("click", () => this.nextTheme());
    this.applyTheme(localStorage.getItem("speculate.theme") || "auto");
    this.pollCloud();
  }

  get transportName() {
    return $("#transport").value;
  }

  setLink(status) {
    document.body.dataset.link = status;
  }

  addUserMessage(text) {
    const node = document.createElement("article");
    node.className = "user";
    node.textContent = text; // untrusted: text only
    this.conversation.append(node);
  }

  schedulePrewarm() {
    if (this.current || !this.history.length || this.prewarmedTurns === this.history.length) return;
    clearTimeout(this.prewarmTimer);
    this.prewarmTimer = setTimeout(() => this.prewarm(), 300);
  }

  prewarm() {
    if (this.current || this.prewarmedTurns === this.history.length) return;
    this.prewarmedTurns = this.history.length;
    const typed = this.input.value.trim();
    const messages = typed ? [...this.history, { role: "user", content: typed }] : this.history;
    fetch("/v1/prewarm", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages }),
    }).catch(() => {}); // only ever a head start: the request itself does not depend on it
  }

  async send() {
    clearTimeout(this.prewarmTimer);
    const text = this.input.value.trim();
    if (!text || this.current) return;
    this.input.value = "";
    this.addUserMessage(text);
    this.history.push({ role: "user", content: text });
    const body = { messages: [...this.history], mode: $("#mode").value };
    const answer = new Answer(this.conversation, {
      onSettled: (a) => this.settled(a),
      onRefined: (a) => this.refined(a),
      onCloudError: (e) => this.showCloud("error", e.code),
    });
    this.current = { answer, transport: this.transports[this.transportName] };
    this.stop.disabled = false;
    const requestId = newRequestId();
    this.answers.set(requestId, answer);
    answer.node.scrollIntoView({ block: "end" });
    try {
      const serverId = await this.current.transport.start(requestId, body, (event) => {
        if (event.event === "start") this.answers.set(event.request_id, answer);
        answer.handle(event);
        answer.node.scrollIntoView({ block: "end" });
      });
      if (serverId) this.answers.set(serverId, answer);
    } catch (error) {
      answer.handle({ event: "error", request_id: requestId, seq: answer.shown.lastSeq + 1,
                      code: "connection_failed", message: String(error), source: "client", fatal: true });
    }
  }

  settled(answer) {
    const text = answer.shown.text;
    if (text) {
      answer.turn = { role: "assistant", content: text };
      this.history.push(answer.turn);
    }
    else this.history.pop(); // nothing answered: the question is not part of the context
    this.current = null;
    this.stop.disabled = true;
    this.input.focus();
  }

  refined(answer) {
    // The later turns were asked with the edge's answer; from now on the cloud's stands.
    if (answer.turn) answer.turn.content = answer.shown.text;
  }

  async cancel() {
    if (!this.current || !this.current.answer.requestId) return;
    await this.current.transport.cancel(this.current.answer.requestId);
  }

  // auto (the system's setting) -> light -> dark -> auto; kept across reloads.
  nextTheme() {
    const order = ["auto", "light", "dark"];
    const current = document.documentElement.dataset.theme || "auto";
    this.applyTheme(order[(order.indexOf(current) + 1) % order.length]);
  }

  applyTheme(theme) {
    if (theme === "auto") delete document.documentElement.dataset.theme;
    else document.documentElement.dataset.theme = theme;
    localStorage.setItem("speculate.theme", theme);
    this.theme.textContent = `Theme: ${theme}`;
  }

  newChat() {
    if (this.current) this.cancel();
    this.history = [];
    this.prewarmedTurns = 0;
    this.current = null;
    this.stop.disabled = true;
    this.conversation.replaceChildren();
    this.input.focus();
  }

  showCloud(state, detail) {
    this.cloud.dataset.state = state;
    this.cloud.textContent = detail ? `cloud: ${state} (${detail})` : `cloud: ${state}`;
  }

  async pollCloud() {
    try {
      const response = await fetch("/readyz", { signal: AbortSignal.timeout(3000) });
      const ready = await response.json();
      const cloud = ready.cloud || {};
      if (!response.ok) this.showCloud("starting");
      else if (cloud.state === "up") this.showCloud("up", `${Math.round(cloud.rtt_ms)} ms`);
      else if (cloud.state === "none") this.showCloud("off");
      else this.showCloud("down", cloud.error || cloud.status);
    } catch {
      this.showCloud("unknown", "server unreachable");
    }
    setTimeout(() => this.pollCloud(), 15000);
  }
}

window.speculate = new App();

// The chat page: conversations (kept in the browser, listed in the sidebar), the
// composer, transports, keyboard shortcuts, the API key, cloud state.

import { Answer } from "./answer.js";
import { compactEvents, Conversations, newConversationId, titleOf } from "./store.js";
import { apiFetch, apiKey, setApiKey } from "./keys.js";
import { newRequestId, SSETransport, WebSocketTransport } from "./transport.js";

const $ = (selector) => document.querySelector(selector);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The messages a request sends: every answered turn; a question that got no answer is
// not part of the context.
export function messagesOf(turns) {
  const messages = [];
  for (let i = 0; i < turns.length; i++) {
    const turn = turns[i];
    const reply = turns[i + 1];
    if (turn.role === "user") {
      if (reply && reply.role === "assistant" && !reply.pending && !reply.content) {
        i += 1;
        continue;
      }
      messages.push({ role: "user", content: turn.content });
    } else if (turn.content) {
      messages.push({ role: "assistant", content: turn.content });
    }
  }
  return messages;
}

class App {
  constructor() {
    this.store = new Conversations();
    this.record = null; // the open conversation: {id, title, turns}, saved once it has a turn
    this.turns = [];
    this.answers = new Map(); // request id -> Answer (for tools and tests)
    this.current = null;
    this.conversation = $("#conversation");
    this.input = $("#prompt");
    this.stop = $("#stop");
    this.cloud = $("#cloud-state");
    this.chats = $("#chats");
    const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
    this.transports = {
      ws: new WebSocketTransport(wsUrl, {
        onStatus: (s) => this.setLink(s),
        onRefused: () => this.askForKey(),
      }),
      sse: new SSETransport(),
    };
    $("#composer").addEventListener("submit", (e) => {
      e.preventDefault();
      this.send();
    });
    this.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && !(e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        this.send();
      }
    });
    document.addEventListener("keydown", (e) => this.shortcut(e));
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
    $("#key-form").addEventListener("submit", (e) => {
      if (e.submitter && e.submitter.value === "save") this.saveKey();
    });
    window.addEventListener("speculate:unauthorized", () => this.askForKey());
    this.pollCloud();
    const last = localStorage.getItem("speculate.open");
    if (last && this.store.load(last)) this.open(last);
    else this.renderChats();
  }

  get history() {
    return messagesOf(this.turns);
  }

  get transportName() {
    return $("#transport").value;
  }

  setLink(status) {
    document.body.dataset.link = status;
  }

  // -- conversations ----------------------------------------------------------------
  save() {
    if (!this.record) return;
    this.record.turns = this.turns;
    this.store.save(this.record);
    localStorage.setItem("speculate.open", this.record.id);
    this.renderChats();
  }

  renderChats() {
    const open = this.record ? this.record.id : null;
    this.chats.replaceChildren(
      ...this.store.list().map((entry) => {
        const item = el("li");
        item.dataset.id = entry.id;
        const pick = el("button", "chat", entry.title);
        pick.type = "button";
        if (entry.id === open) pick.setAttribute("aria-current", "true");
        pick.addEventListener("click", () => this.open(entry.id));
        const rename = el("button", "rename", "✎");
        rename.type = "button";
        rename.title = rename.ariaLabel = `Rename “${entry.title}”`;
        rename.addEventListener("click", () => this.rename(item, entry));
        const remove = el("button", "delete", "✕");
        remove.type = "button";
        remove.title = remove.ariaLabel = `Delete “${entry.title}”`;
        remove.addEventListener("click", () => this.remove(entry));
        item.append(pick, rename, remove);
        return item;
      }),
    );
  }

  rename(item, entry) {
    const field = el("input", "rename-field");
    field.value = entry.title;
    field.ariaLabel = "New name";
    let done = false;
    const finish = (keep) => {
      if (done) return;
      done = true;
      const title = field.value.trim();
      if (keep && title) {
        this.store.rename(entry.id, title);
        if (this.record && this.record.id === entry.id) this.record.title = title;
      }
      this.renderChats();
    };
    field.addEventListener("keydown", (e) => {
      if (e.key === "Enter") finish(true);
      else if (e.key === "Escape") finish(false);
    });
    field.addEventListener("blur", () => finish(true));
    item.replaceChildren(field);
    field.focus();
    field.select();
  }

  remove(entry) {
    if (!confirm(`Delete “${entry.title}”?`)) return;
    this.store.remove(entry.id);
    if (this.record && this.record.id === entry.id) this.newChat();
    else this.renderChats();
  }

  reset() {
    if (this.current) this.cancel();
    this.current = null;
    this.stop.disabled = true;
    this.prewarmedTurns = 0;
    this.conversation.replaceChildren();
  }

  newChat() {
    this.reset();
    this.record = null;
    this.turns = [];
    localStorage.removeItem("speculate.open");
    this.renderChats();
    this.input.focus();
  }

  // Show a kept conversation: each answer rebuilt from its events; one still running
  // (or waiting for a queued refinement) when the page went away is resumed from the
  // server, which replays its events from the first.
  open(id) {
    const record = this.store.load(id);
    if (!record) return this.newChat();
    this.reset();
    this.record = record;
    this.turns = record.turns;
    localStorage.setItem("speculate.open", id);
    this.replaying = true; // rebuilding what is kept: nothing to save
    for (const turn of this.turns) {
      if (turn.role === "user") {
        this.addUserMessage(turn.content);
        continue;
      }
      const answer = this.newAnswer(turn, { restored: true });
      if (turn.pending && turn.requestId) this.resume(answer, turn);
      else if (turn.pending) this.lost(answer, turn, "the page closed before the request started");
      else for (const event of turn.events || []) answer.handle(event);
    }
    this.replaying = false;
    this.markRegenerable();
    this.renderChats();
    const last = this.conversation.lastElementChild;
    if (last) last.scrollIntoView({ block: "end" });
  }

  lost(answer, turn, why) {
    turn.pending = false;
    const end = { event: "error", request_id: turn.requestId || "", seq: answer.shown.lastSeq + 1,
                  code: "not_resumed", message: why, source: "client", fatal: true };
    answer.handle(end);
    turn.events = compactEvents(answer);
    this.save();
  }

  resume(answer, turn) {
    const transport = this.transports.sse;
    this.current = { answer, transport };
    this.stop.disabled = false;
    transport.follow(turn.requestId, (event) => answer.handle(event), (why) => this.lost(answer, turn, why));
  }

  newAnswer(turn, { restored = false } = {}) {
    const answer = new Answer(this.conversation, {
      onStart: (event) => {
        this.answers.set(event.request_id, answer);
        if (turn.requestId !== event.request_id) {
          turn.requestId = event.request_id; // from now on a reload resumes it
          this.save();
        }
      },
      onSettled: (a) => this.settled(a, turn),
      onRefined: (a) => this.settled(a, turn),
      onCloudError: (e) => this.showCloud("error", e.code),
    });
    answer.restored = restored;
    return answer;
  }

  // -- asking -------------------------------------------------------------------------
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
    apiFetch("/v1/prewarm", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messages }),
    }).catch(() => {}); // only ever a head start: the request itself does not depend on it
  }

  send() {
    clearTimeout(this.prewarmTimer);
    const text = this.input.value.trim();
    if (!text || this.current) return;
    this.input.value = "";
    if (!this.record) this.record = { id: newConversationId(), title: titleOf(text), turns: [] };
    this.addUserMessage(text);
    this.turns.push({ role: "user", content: text });
    this.ask();
  }

  // Ask again for the last question: its answer is replaced.
  regenerate() {
    if (this.current || !this.turns.length) return;
    const last = this.turns[this.turns.length - 1];
    if (last.role !== "assistant") return;
    this.turns.pop();
    const node = this.conversation.lastElementChild;
    if (node && node.classList.contains("answer")) node.remove();
    this.ask();
  }

  async ask() {
    const turn = { role: "assistant", content: "", requestId: null, pending: true };
    const body = { messages: this.history, mode: $("#mode").value };
    this.turns.push(turn);
    this.save();
    const answer = this.newAnswer(turn);
    this.current = { answer, transport: this.transports[this.transportName] };
    this.stop.disabled = false;
    this.markRegenerable();
    const requestId = newRequestId();
    this.answers.set(requestId, answer);
    answer.node.scrollIntoView({ block: "end" });
    try {
      const serverId = await this.current.transport.start(requestId, body, (event) => {
        answer.handle(event);
        answer.node.scrollIntoView({ block: "end" });
      });
      if (serverId) this.answers.set(serverId, answer);
    } catch (error) {
      answer.handle({ event: "error", request_id: requestId, seq: answer.shown.lastSeq + 1,
                      code: "connection_failed", message: String(error), source: "client", fatal: true });
    }
  }

  settled(answer, turn) {
    if (this.replaying) return;
    turn.content = answer.shown.text;
    turn.pending = !(answer.shown.done || answer.shown.fatal); // a queued refinement is due
    turn.events = turn.pending ? null : compactEvents(answer);
    this.save();
    if (this.current && this.current.answer === answer) {
      this.current = null;
      this.stop.disabled = true;
      if (!answer.restored) this.input.focus();
    }
    this.markRegenerable();
  }

  // Only the last answer, once settled, offers to be asked again.
  markRegenerable() {
    for (const old of this.conversation.querySelectorAll("button.regenerate")) old.remove();
    const last = this.conversation.lastElementChild;
    if (this.current || !last || !last.classList.contains("answer")) return;
    const again = el("button", "toggle regenerate", "Regenerate");
    again.type = "button";
    again.title = "Ask again (Ctrl+Shift+Enter)";
    again.addEventListener("click", () => this.regenerate());
    last.querySelector(".chips").append(again);
  }

  async cancel() {
    if (!this.current || !this.current.answer.requestId) return;
    await this.current.transport.cancel(this.current.answer.requestId);
  }

  // -- keyboard -----------------------------------------------------------------------
  shortcut(e) {
    const mod = e.ctrlKey || e.metaKey;
    if (e.key === "Escape" && this.current) {
      e.preventDefault();
      this.cancel();
    } else if (mod && e.shiftKey && e.key.toLowerCase() === "o") {
      e.preventDefault();
      this.newChat();
    } else if (mod && e.shiftKey && e.key === "Enter") {
      e.preventDefault();
      this.regenerate();
    } else if (mod && e.shiftKey && (e.key === ";" || e.code === "Semicolon")) {
      e.preventDefault();
      const copy = this.conversation.querySelectorAll("button.copy-answer");
      if (copy.length) copy[copy.length - 1].click();
    } else if (e.key === "/" && !mod && !["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement.tagName)) {
      e.preventDefault();
      this.input.focus();
    }
  }

  // -- API key ------------------------------------------------------------------------
  askForKey() {
    const dialog = $("#key-dialog");
    if (dialog.open) return;
    $("#key").value = apiKey() || "";
    dialog.showModal();
  }

  saveKey() {
    setApiKey($("#key").value.trim());
    this.transports.ws.reconnect();
  }

  // -- theme and cloud state ----------------------------------------------------------
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

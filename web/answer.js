// One answer in the chat: applies events to its ShownText and renders them.
// While streaming, settled blocks (one kind of text, nothing moving) are already
// Markdown, draft blocks styled as draft; from the first block still moving on, the
// text is shown as it changes: spliced-in text highlighted, removed text struck through
// for a moment. When done: Markdown throughout, a badge with route and final source,
// chips with the timings, copy, and a draft-vs-final diff toggle.

import { renderDiff } from "./diff.js";
import { BlockRenderer, copyText, splitBlocks } from "./markdown.js";
import { ShownText } from "./text.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}

export class Answer {
  constructor(
    container,
    { onStart = () => {}, onSettled = () => {}, onRefined = () => {}, onCloudError = () => {} } = {},
  ) {
    this.shown = new ShownText();
    this.startEvent = null;
    this.problems = []; // non-fatal errors, kept with the answer
    this.onStart = onStart; // the server named the request: it can be resumed from now on
    this.requestId = null;
    this.route = null;
    this.onSettled = onSettled; // the composer is free again (done, provisional or failed)
    this.onRefined = onRefined; // a queued refinement replaced a provisional answer
    this.onCloudError = onCloudError;
    this.node = el("article", "answer");
    this.node.dataset.state = "waiting";
    this.badge = el("div", "badge", "…");
    this.body = el("div", "text");
    this.blocks = new BlockRenderer(this.body);
    this.body.setAttribute("aria-live", "polite");
    this.body.setAttribute("aria-busy", "true");
    this.notes = el("div", "notes");
    this.chips = el("div", "chips");
    this.node.append(this.badge, this.body, this.notes, this.chips);
    container.append(this.node);
    this.frame = 0;
    this.timer = 0;
  }

  handle(event) {
    this.shown.apply(event);
    if (event.event === "start") {
      this.startEvent = event;
      this.onStart(event);
      this.requestId = event.request_id;
      this.route = event.route;
      this.node.dataset.requestId = event.request_id;
      this.node.dataset.state = "streaming";
      this.badge.textContent = event.route;
      this.badge.title = event.reason;
    } else if (event.event === "queued") {
      this.node.dataset.pending = "true";
      this.notes.replaceChildren(el("span", "pending", `refinement pending: ${event.reason}`));
    } else if (event.event === "error") {
      if (!event.fatal) this.problems.push(event);
      const note = el("span", event.fatal ? "problem fatal" : "problem", `${event.source}: ${event.message}`);
      note.setAttribute("role", "status");
      this.notes.append(note);
      if (event.source === "cloud") this.onCloudError(event);
    }
    if (event.event === "done" && this.shown.done) this.finish();
    else if (event.event === "done") this.provisional();
    else if (this.shown.fatal) this.fail();
    else this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.render());
  }

  // The leading blocks that have settled, as [{source, kind, end}] (end: code points).
  settledBlocks(now, all = false) {
    const text = this.shown.text;
    const blocks = splitBlocks(text);
    const settled = [];
    let point = 0; // code points before the block
    for (const block of all ? blocks : blocks.slice(0, -1)) {
      const end = point + Array.from(block.source).length;
      const kind = all ? "cloud" : this.shown.settled(point, end, now);
      if (kind === null) break;
      settled.push({ source: block.source, kind, end });
      point = end;
    }
    return settled;
  }

  render() {
    this.frame = 0;
    clearTimeout(this.timer);
    const now = performance.now();
    const settled = this.settledBlocks(now);
    const from = settled.length ? settled[settled.length - 1].end : 0;
    const live = el("div", "live");
    live.append(
      ...this.shown.runs(now, from).map((run) => {
        if (run.kind === "ghost") return el("del", "ghost", run.text);
        const span = el("span", run.kind, run.text);
        // Restarting the highlight on every render would flicker: continue it instead.
        if (run.kind === "fresh") span.style.animationDelay = `-${Math.round(run.age)}ms`;
        return span;
      }),
    );
    this.blocks.show(settled, live);
    const expiry = this.shown.nextExpiry(now);
    if (expiry !== Infinity) this.timer = setTimeout(() => this.schedule(), expiry - now + 16);
  }

  showFinal() {
    this.blocks.show(this.settledBlocks(performance.now(), true));
  }

  finish() {
    cancelAnimationFrame(this.frame);
    clearTimeout(this.timer);
    const done = this.shown.done;
    const s = done.stats || {};
    this.node.dataset.pending = "false";
    this.notes.querySelectorAll(".pending").forEach((n) => n.remove());
    this.badge.textContent = `${this.route} · final from ${done.final_source}`;
    this.showFinal();
    this.body.setAttribute("aria-busy", "false");
    const chips = [
      ["first draft", ms(s.draft_first_ms)],
      ["first cloud token", ms(s.cloud_first_ms)],
      ["final", ms(s.final_ms)],
      ["tokens", `${s.draft_tokens ?? 0} edge / ${s.cloud_tokens ?? 0} cloud`],
      ["cost", `$${(s.cost_usd ?? 0).toFixed(6)}`],
      ["edits", `${s.edit_distance ?? 0} chars`],
    ];
    this.chips.replaceChildren(
      ...chips.map(([label, value]) => {
        const chip = el("span", "chip");
        chip.append(el("span", "label", label), el("span", "value", value));
        return chip;
      }),
    );
    const copy = el("button", "toggle copy-answer", "Copy");
    copy.type = "button";
    copy.title = "Copy this answer (Markdown)";
    copy.addEventListener("click", () => copyText(done.text, copy));
    this.chips.append(copy);
    if (this.shown.draft && this.shown.draft !== done.text) {
      const toggle = el("button", "toggle", "Show draft vs final");
      toggle.type = "button";
      toggle.setAttribute("aria-pressed", "false");
      toggle.addEventListener("click", () => {
        const showing = toggle.getAttribute("aria-pressed") === "true";
        toggle.setAttribute("aria-pressed", String(!showing));
        toggle.textContent = showing ? "Show draft vs final" : "Show final answer";
        this.blocks.reset();
        if (showing) this.showFinal();
        else this.body.replaceChildren(renderDiff(this.shown.draft, done.text));
      });
      this.chips.append(toggle);
    }
    this.node.dataset.state = "done";
    if (this.settledOnce) this.onRefined(this);
    this.settle();
  }

  // The edge's answer stands for now; the cloud's refinement is queued and will patch it.
  provisional() {
    cancelAnimationFrame(this.frame);
    this.render();
    this.badge.textContent = `${this.route} · from edge · refinement queued`;
    this.body.setAttribute("aria-busy", "false");
    this.node.dataset.state = "queued";
    this.settle();
  }

  settle() {
    if (this.settledOnce) return;
    this.settledOnce = true;
    this.onSettled(this);
  }

  fail() {
    cancelAnimationFrame(this.frame);
    this.render();
    this.body.setAttribute("aria-busy", "false");
    this.node.dataset.state = this.shown.fatal.code === "cancelled" ? "cancelled" : "error";
    this.badge.textContent = `${this.route || "request"} · ${this.shown.fatal.code}`;
    this.settle();
  }
}

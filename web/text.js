// The shown text of one answer, rebuilt from wire events: the same rules as
// speculate/core/text.py, event by event (tests/web replays recorded streams through
// both). It takes each event once, in seq order (a transport's Sequence drops replays)
// and throws where a stream breaks the protocol's invariants.
// Offsets are Unicode code points (Python str indices), so the text is kept as an
// array of code points, never indexed as UTF-16 units. Each code point carries a
// mark saying where it came from and when, which the renderer turns into styles.

import { StreamEnd } from "./protocol.js";

export const FRESH_MS = 1200; // how long spliced-in text stays highlighted
export const GHOST_MS = 900; // how long removed text stays visible, struck through

export class ShownText {
  constructor() {
    this.chars = [];
    this.marks = []; // {kind: "draft" | "fresh", at: ms}
    this.ghosts = []; // removed text shown struck through: {at, text, until}
    this.committed = 0;
    this.lastSeq = 0;
    this.draft = ""; // every draft event, concatenated: what the edge said
    this.done = null;
    this.fatal = null;
    this.provisional = null; // a done that a queued refinement will follow
    this.end = new StreamEnd();
  }

  get text() {
    return this.chars.join("");
  }

  get finished() {
    return this.done !== null || this.fatal !== null;
  }

  apply(event, now = performance.now()) {
    if (this.finished) throw new Error(`event ${event.event} seq=${event.seq} after the stream ended`);
    if (event.seq !== this.lastSeq + 1) throw new Error(`seq ${event.seq} follows ${this.lastSeq}`);
    this.lastSeq = event.seq;
    const end = this.end.see(event);
    switch (event.event) {
      case "draft": {
        const points = Array.from(event.text);
        this.chars.push(...points);
        for (const _ of points) this.marks.push({ kind: "draft", at: now });
        this.draft += event.text;
        break;
      }
      case "patch":
        for (const op of event.ops) {
          if (op.at < this.committed && (op.del > 0 || op.ins)) {
            throw new Error(`patch at ${op.at} touches committed text [0, ${this.committed})`);
          }
        }
        for (const op of event.ops) this.splice(op.at, op.del, op.ins, now);
        break;
      case "commit":
        if (event.upto < this.committed || event.upto > this.chars.length) {
          throw new Error(`commit ${event.upto} outside [${this.committed}, ${this.chars.length}]`);
        }
        this.committed = event.upto;
        break;
      case "done":
        if (event.text !== this.text) throw new Error("done.text differs from the text the events built");
        if (end === "provisional") this.provisional = event;
        else this.done = event;
        break;
      case "error":
        if (event.fatal) this.fatal = event;
        break;
    }
  }

  splice(at, del, ins, now = performance.now()) {
    if (at < 0 || del < 0 || at + del > this.chars.length) {
      throw new RangeError(`splice at ${at} del ${del} outside text of ${this.chars.length}`);
    }
    const removed = this.chars.slice(at, at + del).join("");
    const points = Array.from(ins);
    this.chars.splice(at, del, ...points);
    this.marks.splice(at, del, ...points.map(() => ({ kind: "fresh", at: now })));
    for (const ghost of this.ghosts) {
      if (ghost.at > at) ghost.at = Math.max(at, ghost.at - del) + points.length;
    }
    if (removed.trim()) this.ghosts.push({ at, text: removed, until: now + GHOST_MS });
  }

  // Runs of equal style, for rendering: [{text, kind, age}] with ghosts in place, from
  // code point `from` on (the part before it is rendered otherwise).
  runs(now = performance.now(), from = 0) {
    this.ghosts = this.ghosts.filter((g) => g.until > now);
    const ghostsAt = new Map();
    for (const g of this.ghosts) ghostsAt.set(g.at, (ghostsAt.get(g.at) || "") + g.text);
    const runs = [];
    const push = (text, kind, age) => {
      const last = runs[runs.length - 1];
      if (last && last.kind === kind && kind !== "fresh" && kind !== "ghost") last.text += text;
      else runs.push({ text, kind, age });
    };
    for (let i = from; i <= this.chars.length; i++) {
      if (ghostsAt.has(i)) push(ghostsAt.get(i), "ghost", 0);
      if (i === this.chars.length) break;
      const mark = this.marks[i];
      const age = now - mark.at;
      const kind = mark.kind === "fresh" && age < FRESH_MS ? "fresh" : mark.kind === "draft" ? "draft" : "cloud";
      if (kind === "fresh" && runs.length && runs[runs.length - 1].kind === "fresh" &&
          runs[runs.length - 1].at === mark.at) {
        runs[runs.length - 1].text += this.chars[i];
      } else if (kind === "fresh") {
        runs.push({ text: this.chars[i], kind, age, at: mark.at });
      } else {
        push(this.chars[i], kind, age);
      }
    }
    return runs;
  }

  // Is [start, end) settled for now: every code point of one kind (all draft or all
  // cloud), none freshly spliced in, no removed text shown inside it?
  settled(start, end, now = performance.now()) {
    let kind = null;
    for (let i = start; i < end; i++) {
      const mark = this.marks[i];
      if (mark.kind === "fresh" && now - mark.at < FRESH_MS) return null;
      const its = mark.kind === "draft" ? "draft" : "cloud";
      if (kind !== null && its !== kind) return null;
      kind = its;
    }
    if (this.ghosts.some((g) => g.until > now && g.at > start && g.at < end)) return null;
    return kind;
  }

  nextExpiry(now = performance.now()) {
    let next = Infinity;
    for (const g of this.ghosts) next = Math.min(next, g.until);
    for (const m of this.marks) if (m.kind === "fresh" && m.at + FRESH_MS > now) next = Math.min(next, m.at + FRESH_MS);
    return next;
  }
}

// The wire protocol's client rules, in one place for the browser (speculate/core/protocol.py
// holds the same rules for Python; tests/web replays recorded streams through both).

export const EVENT_TYPES = ["start", "draft", "patch", "commit", "queued", "error", "done"];

// Does this event end a stream (a done, or a fatal error)?
export function ends(event) {
  return event.event === "done" || (event.event === "error" && event.fatal === true);
}

// Where a stream ends, event by event: at its fatal error or its done, except that after
// "queued" the first done is provisional and the stream goes on to the refinement's final
// one. see(event) answers "final", "provisional" or null.
export class StreamEnd {
  constructor() {
    this.queued = false;
    this.provisional = false;
  }

  see(event) {
    if (event.event === "queued") this.queued = true;
    if (!ends(event)) return null;
    if (event.event === "done" && this.queued && !this.provisional) {
      this.provisional = true;
      return "provisional";
    }
    return "final";
  }
}

// The events of one request in seq order, each once: a resumed stream replays what the
// client may already have (same seq), which accept() drops; a gap is an error.
export class Sequence {
  constructor() {
    this.last = 0;
  }

  accept(event) {
    if (event.seq <= this.last) return false;
    if (event.seq !== this.last + 1) throw new Error(`event seq ${event.seq} follows ${this.last}: a gap`);
    this.last = event.seq;
    return true;
  }
}

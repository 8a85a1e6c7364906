// Conversations kept in the browser (localStorage), so a reload or a closed tab loses
// nothing: an index of {id, title, updated} and one record per conversation. An answer
// is kept as a few events that rebuild it exactly (route, timings, draft vs final): its
// start, the draft, one patch to the text it ended with, and its end.

const INDEX = "speculate.conversations";
const RECORD = (id) => `speculate.conversation.${id}`;

export function newConversationId() {
  const random = crypto.getRandomValues(new Uint32Array(2));
  return `c-${Date.now().toString(36)}-${random[0].toString(36)}${random[1].toString(36)}`;
}

export function titleOf(text) {
  const line = text.trim().split("\n")[0];
  return line.length > 48 ? `${line.slice(0, 47)}…` : line || "New chat";
}

// The events that rebuild a finished answer as it stands: start, draft, a patch to the
// text it shows now, its non-fatal errors (for its notes), then its end (commit + done,
// or the fatal error).
export function compactEvents({ shown, startEvent, problems }) {
  const id = startEvent ? startEvent.request_id : shown.fatal ? shown.fatal.request_id : "";
  let seq = 0;
  const next = (event) => ({ ...event, request_id: id, seq: ++seq });
  const events = [];
  if (startEvent) events.push(next(startEvent));
  if (shown.draft) events.push(next({ event: "draft", text: shown.draft }));
  const text = shown.text;
  if (text !== shown.draft) {
    const ops = [{ at: 0, del: Array.from(shown.draft).length, ins: text }];
    events.push(next({ event: "patch", ops, source: "cloud" }));
  }
  for (const problem of problems) events.push(next(problem));
  if (shown.done) {
    events.push(next({ event: "commit", upto: Array.from(text).length }));
    events.push(next(shown.done));
  } else if (shown.fatal) {
    events.push(next(shown.fatal));
  }
  return events;
}

export class Conversations {
  constructor(storage = localStorage) {
    this.storage = storage;
  }

  list() {
    try {
      const index = JSON.parse(this.storage.getItem(INDEX) || "[]");
      return Array.isArray(index) ? index.sort((a, b) => b.updated - a.updated) : [];
    } catch {
      return []; // a damaged index: start over rather than fail to load the page
    }
  }

  load(id) {
    try {
      return JSON.parse(this.storage.getItem(RECORD(id)) || "null");
    } catch {
      return null;
    }
  }

  save(conversation) {
    conversation.updated = Date.now();
    const entry = { id: conversation.id, title: conversation.title, updated: conversation.updated };
    const index = this.list().filter((c) => c.id !== conversation.id);
    index.unshift(entry);
    this.write(RECORD(conversation.id), conversation);
    this.write(INDEX, index);
  }

  rename(id, title) {
    const conversation = this.load(id);
    if (!conversation) return;
    conversation.title = title;
    this.save(conversation);
  }

  remove(id) {
    this.storage.removeItem(RECORD(id));
    this.write(INDEX, this.list().filter((c) => c.id !== id));
  }

  // When the browser's quota is full, the oldest conversations make room.
  write(key, value) {
    const data = JSON.stringify(value);
    for (;;) {
      try {
        this.storage.setItem(key, data);
        return;
      } catch (error) {
        const oldest = this.list().pop();
        if (!oldest || key === RECORD(oldest.id)) throw error;
        this.remove(oldest.id);
      }
    }
  }
}

// Word-level diff of the draft against the final answer, rendered as <del>/<ins> with
// textContent only. jsdiff (vendored, BSD-3-Clause: vendor/diff.LICENSE) runs Myers'
// O(ND) algorithm, whose work and memory grow with the number of edits D, not with the
// product of the lengths; past MAX_EDITS edits (a final answer that shares little with
// the draft) it stops, and the two are shown whole, one after the other: memory stays
// linear in the texts however long and different they are.

import { diffWordsWithSpace } from "./vendor/diff.js";

export const MAX_EDITS = 1000; // word and space tokens

export function wordDiff(before, after) {
  const parts = diffWordsWithSpace(before, after, { maxEditLength: MAX_EDITS });
  if (parts === undefined) {
    return [
      { kind: "del", text: before },
      { kind: "ins", text: after },
    ].filter((part) => part.text);
  }
  return parts.map((part) => ({
    kind: part.added ? "ins" : part.removed ? "del" : "same",
    text: part.value,
  }));
}

export function renderDiff(before, after) {
  const root = document.createElement("div");
  root.className = "diff";
  for (const part of wordDiff(before, after)) {
    const node = part.kind === "same" ? document.createElement("span") : document.createElement(part.kind);
    node.textContent = part.text;
    root.append(node);
  }
  return root;
}

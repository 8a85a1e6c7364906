// Word-level diff of the draft against the final answer, rendered as <del>/<ins> with
// textContent only. jsdiff (vendored, BSD-3-Clause: vendor/diff.LICENSE) runs Myers'
// O(ND) algorithm: memory grows with the edits, not with the product of the lengths.

import { diffWordsWithSpace } from "./vendor/diff.js";

export function wordDiff(before, after) {
  return diffWordsWithSpace(before, after).map((part) => ({
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

// Word-level diff of the draft against the final answer (LCS), rendered as
// <del>/<ins> with textContent only.

function tokens(text) {
  return text.match(/\s+|[^\s]+/g) || [];
}

export function wordDiff(before, after) {
  const a = tokens(before);
  const b = tokens(after);
  const n = a.length;
  const m = b.length;
  const lcs = Array.from({ length: n + 1 }, () => new Uint16Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
    }
  }
  const parts = [];
  const push = (kind, text) => {
    const last = parts[parts.length - 1];
    if (last && last.kind === kind) last.text += text;
    else parts.push({ kind, text });
  };
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      push("same", a[i]);
      i++;
      j++;
    } else if (j < m && (i === n || lcs[i][j + 1] >= lcs[i + 1][j])) {
      push("ins", b[j++]);
    } else {
      push("del", a[i++]);
    }
  }
  return parts;
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

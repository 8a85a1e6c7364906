// Markdown for model answers, safely: markdown-it with raw HTML off (tables, links,
// blockquotes, nested lists, code), highlight.js for code, and DOMPurify over the result
// as a second wall, so untrusted model text never becomes live HTML or script. All three
// are vendored in vendor/ (scripts/vendor-web), loaded as plain files: no build step,
// no CDN, and the Content-Security-Policy keeps forbidding inline script.
//
// While an answer streams it is rendered block by block (blocks end at a blank line
// outside a code fence): a block that has not changed keeps its DOM node, so finished
// paragraphs neither flicker nor lose a selection while the rest is still arriving.

import "./vendor/markdown-it.min.js"; // defines globalThis.markdownit
import DOMPurify from "./vendor/purify.es.js";
import hljs from "./vendor/highlight.min.js";

const md = globalThis.markdownit({
  html: false, // model text is untrusted: no raw HTML, ever
  linkify: true,
  breaks: false,
  highlight(code, language) {
    // highlight.js escapes the code itself; an unknown language stays plain (escaped).
    if (language && hljs.getLanguage(language)) {
      return hljs.highlight(code, { language, ignoreIllegals: true }).value;
    }
    return "";
  },
});
md.disable("image"); // a model's image would fetch from anywhere: shown as its text

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

const SANITIZE = {
  RETURN_DOM_FRAGMENT: true,
  FORBID_TAGS: ["img", "style", "form", "input", "button", "iframe"],
  FORBID_ATTR: ["style"],
};

function withCopyButtons(fragment) {
  for (const pre of fragment.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    if (!code) continue;
    const wrap = document.createElement("div");
    wrap.className = "code";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.textContent = "Copy";
    button.title = "Copy this code";
    button.addEventListener("click", () => copyText(code.textContent, button));
    pre.replaceWith(wrap);
    wrap.append(button, pre);
  }
  return fragment;
}

export async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => (button.textContent = "Copy"), 1500);
}

// One Markdown source rendered to sanitised DOM, code blocks with a copy button.
export function renderMarkdown(text) {
  const root = document.createElement("div");
  root.className = "markdown";
  root.append(withCopyButtons(DOMPurify.sanitize(md.render(text), SANITIZE)));
  return root;
}

// The text cut into blocks: [{source, start, end}] in UTF-16 offsets. Every block but the
// last ends with the blank line after it; the last is the one still being written.
export function splitBlocks(text) {
  const blocks = [];
  let start = 0;
  let fence = null;
  let offset = 0;
  for (const line of text.split("\n")) {
    const end = offset + line.length + 1; // past this line's newline
    const marker = line.trimStart().match(/^(`{3,}|~{3,})/);
    if (marker && (fence === null || marker[1][0] === fence[0] && marker[1].length >= fence.length)) {
      fence = fence === null ? marker[1] : null;
    } else if (fence === null && line.trim() === "" && offset > start && end <= text.length) {
      blocks.push({ source: text.slice(start, end), start, end });
      start = end;
    }
    offset = end;
  }
  blocks.push({ source: text.slice(start), start, end: text.length });
  return blocks;
}

// Renders blocks into a container, keeping the node of every block whose source is
// unchanged since the last call (only its style follows the block's kind).
export class BlockRenderer {
  constructor(container) {
    this.container = container;
    this.rendered = []; // [{source, node}]
  }

  // `blocks`: [{source, kind}] to show as Markdown, in order (kind "draft" is styled as
  // the edge's draft); `tail`: a node shown after them (the text still moving), or null.
  show(blocks, tail = null) {
    const kept = blocks.map(({ source, kind }, index) => {
      const old = this.rendered[index];
      const block = old && old.source === source ? old : { source, node: renderMarkdown(source) };
      block.node.classList.toggle("draft", kind === "draft");
      return block;
    });
    const nodes = kept.map((block) => block.node);
    if (tail) nodes.push(tail);
    // Only what changed moves: untouched blocks stay where they are.
    nodes.forEach((node, at) => {
      if (this.container.childNodes[at] !== node) {
        this.container.insertBefore(node, this.container.childNodes[at] || null);
      }
    });
    while (this.container.childNodes.length > nodes.length) this.container.lastChild.remove();
    this.rendered = kept;
  }

  reset() {
    this.rendered = [];
    this.container.replaceChildren();
  }
}

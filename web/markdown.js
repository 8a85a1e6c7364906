// A small, safe Markdown renderer: paragraphs, headings, lists, code blocks, inline
// code, bold and italics. It builds DOM nodes with textContent only: model and user
// text is untrusted, so nothing here ever becomes live HTML or script.

function inline(parent, text) {
  // `code`, **bold**, *italic* / _italic_; everything else is plain text. As in
  // CommonMark, emphasis markers must hug the text (2 * 3 * 4 is not emphasis) and
  // underscores inside words (snake_case_names) are not emphasis.
  const pattern = /(`[^`\n]+`|\*\*(?!\s)[^*\n]+(?<!\s)\*\*|\*(?!\s)[^*\n]+(?<!\s)\*|(?<![\p{L}\p{N}_])_(?!\s)[^_\n]+(?<!\s)_(?![\p{L}\p{N}_]))/gu;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) parent.append(text.slice(last, match.index));
    const token = match[0];
    let node;
    if (token.startsWith("`")) {
      node = document.createElement("code");
      node.textContent = token.slice(1, -1);
    } else if (token.startsWith("**")) {
      node = document.createElement("strong");
      node.textContent = token.slice(2, -2);
    } else {
      node = document.createElement("em");
      node.textContent = token.slice(1, -1);
    }
    parent.append(node);
    last = match.index + token.length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

export function renderMarkdown(source) {
  const root = document.createDocumentFragment();
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*```\s*([\w+-]*)\s*$/);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) body.push(lines[i++]);
      i++; // the closing fence (or the end of an unfinished block)
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      if (fence[1]) code.dataset.lang = fence[1];
      code.textContent = body.join("\n");
      pre.append(code);
      root.append(pre);
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      const h = document.createElement(`h${Math.min(6, heading[1].length + 2)}`);
      inline(h, heading[2]);
      root.append(h);
      i++;
      continue;
    }
    const item = /^\s*(?:[-*+]|\d+[.)])\s+/;
    if (item.test(line)) {
      const ordered = /^\s*\d+[.)]\s+/.test(line);
      const list = document.createElement(ordered ? "ol" : "ul");
      while (i < lines.length && item.test(lines[i])) {
        const li = document.createElement("li");
        inline(li, lines[i].replace(item, ""));
        list.append(li);
        i++;
      }
      root.append(list);
      continue;
    }
    if (!line.trim()) {
      i++;
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && !item.test(lines[i]) &&
           !/^\s*```/.test(lines[i]) && !/^#{1,6}\s/.test(lines[i])) {
      para.push(lines[i++]);
    }
    const p = document.createElement("p");
    para.forEach((text, n) => {
      if (n) p.append(document.createElement("br"));
      inline(p, text);
    });
    root.append(p);
  }
  return root;
}

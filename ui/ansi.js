// ANSI escape sequences of a log line rendered as styled spans: SGR colours (16 as
// classes, 256 and true colour through the CSSOM, which the page's CSP allows), bold,
// dim, italic, underline; every other escape sequence is dropped. Each line starts
// unstyled (a virtualised view renders lines on their own).

const CSI = /\x1b\[([0-9;?]*)([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

function xterm256(n) {
  if (n < 16) return null;
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v},${v},${v})`;
  }
  n -= 16;
  const c = [Math.floor(n / 36), Math.floor(n / 6) % 6, n % 6].map((x) => (x ? x * 40 + 55 : 0));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function applySgr(st, params) {
  const p = params === "" ? [0] : params.split(";").map((x) => (x === "" ? 0 : Number(x)));
  for (let i = 0; i < p.length; i++) {
    const n = p[i];
    if (n === 0) Object.assign(st, { fg: null, bg: null, fgRgb: null, bgRgb: null, bold: false, dim: false, italic: false, underline: false });
    else if (n === 1) st.bold = true;
    else if (n === 2) st.dim = true;
    else if (n === 3) st.italic = true;
    else if (n === 4) st.underline = true;
    else if (n === 22) st.bold = st.dim = false;
    else if (n === 23) st.italic = false;
    else if (n === 24) st.underline = false;
    else if (n >= 30 && n <= 37) Object.assign(st, { fg: n - 30, fgRgb: null });
    else if (n >= 90 && n <= 97) Object.assign(st, { fg: n - 90 + 8, fgRgb: null });
    else if (n === 39) Object.assign(st, { fg: null, fgRgb: null });
    else if (n >= 40 && n <= 47) Object.assign(st, { bg: n - 40, bgRgb: null });
    else if (n >= 100 && n <= 107) Object.assign(st, { bg: n - 100 + 8, bgRgb: null });
    else if (n === 49) Object.assign(st, { bg: null, bgRgb: null });
    else if (n === 38 || n === 48) {
      let colour = null;
      let idx = null;
      if (p[i + 1] === 5) {
        const c = p[i + 2] || 0;
        if (c < 16) idx = c;
        else colour = xterm256(c);
        i += 2;
      } else if (p[i + 1] === 2) {
        colour = `rgb(${p[i + 2] || 0},${p[i + 3] || 0},${p[i + 4] || 0})`;
        i += 4;
      }
      if (n === 38) Object.assign(st, { fg: idx, fgRgb: colour });
      else Object.assign(st, { bg: idx, bgRgb: colour });
    }
  }
}

function span(text, st) {
  const plain = st.fg === null && st.bg === null && !st.fgRgb && !st.bgRgb && !st.bold && !st.dim && !st.italic && !st.underline;
  if (plain) return document.createTextNode(text);
  const s = document.createElement("span");
  const cls = [];
  if (st.fg !== null) cls.push(`a-f${st.fg}`);
  if (st.bg !== null) cls.push(`a-b${st.bg}`);
  if (st.bold) cls.push("a-bold");
  if (st.dim) cls.push("a-dim");
  if (st.italic) cls.push("a-italic");
  if (st.underline) cls.push("a-under");
  if (cls.length) s.className = cls.join(" ");
  if (st.fgRgb) s.style.color = st.fgRgb;
  if (st.bgRgb) s.style.backgroundColor = st.bgRgb;
  s.textContent = text;
  return s;
}

/** What a terminal would show of `line` after carriage returns: the text after the last. */
function afterCarriageReturn(line) {
  const trimmed = line.endsWith("\r") ? line.slice(0, -1) : line;
  const cr = trimmed.lastIndexOf("\r");
  return cr >= 0 ? trimmed.slice(cr + 1) : trimmed;
}

/** `line` as a fragment of text nodes and styled spans. */
export function renderAnsi(line) {
  const frag = document.createDocumentFragment();
  const text = afterCarriageReturn(line);
  const st = { fg: null, bg: null, fgRgb: null, bgRgb: null, bold: false, dim: false, italic: false, underline: false };
  let last = 0;
  CSI.lastIndex = 0;
  let m;
  while ((m = CSI.exec(text)) !== null) {
    if (m.index > last) frag.append(span(text.slice(last, m.index), st));
    if (m[2] === "m") applySgr(st, m[1]);
    last = CSI.lastIndex;
  }
  if (last < text.length) frag.append(span(text.slice(last), st));
  return frag;
}

/** `line` without escape sequences (for copying, searching). */
export function stripAnsi(line) {
  return afterCarriageReturn(line).replace(CSI, "");
}

// raftvisor dashboard: small DOM helpers. Everything the server sends is
// put into the page as text nodes, never parsed as HTML.

/**
 * Creates `<tag>` with `attrs` (`class`, `id`, `data-*`, properties such
 * as `type`, `disabled`; `on*` functions become listeners) and children
 * (strings become text nodes; null and false are skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name.startsWith("data-") || name.startsWith("aria-") || name === "for" || name === "role") {
      node.setAttribute(name, value === true ? "" : String(value));
    } else {
      node[name] = value;
    }
  }
  add(node, ...children);
  return node;
}

/** Appends `children` to `node` as `h` does (null and false skipped). */
export function add(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `node`. */
export function fill(node, ...children) {
  node.replaceChildren();
  add(node, ...children);
  return node;
}

/**
 * A table in a scrolling wrapper. `columns`: [{ title, cell(row) → text or
 * node, class? }]; `rowAttrs(row)` adds attributes (e.g. data-*) per row.
 */
export function table(columns, rows, { id, empty = "nothing here yet", rowAttrs } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.title)));
  const body = rows.length
    ? rows.map((row) =>
        h("tr", rowAttrs ? rowAttrs(row) : {}, columns.map((c) => h("td", { class: c.class, "data-label": c.title }, c.cell(row) ?? "—"))),
      )
    : [h("tr", { class: "empty" }, h("td", { colSpan: columns.length }, empty))];
  return h("div", { class: "table-wrap" }, h("table", { id }, h("thead", {}, head), h("tbody", {}, body)));
}

/** A definition list of [label, value] pairs (values may be nodes). */
export function facts(pairs, attrs = {}) {
  return h(
    "dl",
    { class: "facts", ...attrs },
    pairs.filter(Boolean).map(([label, value, id]) => h("div", {}, h("dt", {}, label), h("dd", { id }, value ?? "—"))),
  );
}

/** A coloured label for a state name (`running`, `down`, …). */
export function badge(state) {
  const text = String(state ?? "unknown");
  return h("span", { class: `badge state-${text.replace(/[^a-z_]/gi, "")}` }, text.replaceAll("_", " "));
}

/** A local date and time for milliseconds since the epoch. */
export function when(ms) {
  if (!ms) return "—";
  const date = new Date(ms);
  return date.toLocaleString(undefined, { hour12: false });
}

/** "1.2 s", "3 min" for a duration in milliseconds. */
export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)} min`;
  if (ms < 172_800_000) return `${(ms / 3_600_000).toFixed(1)} h`;
  return `${Math.round(ms / 86_400_000)} d`;
}

/** A message box: `kind` is `error`, `ok` or `note`. */
export function notice(kind, text, id) {
  return h("p", { class: `notice ${kind}`, id, role: kind === "error" ? "alert" : "status" }, text);
}

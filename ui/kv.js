// raftvisor dashboard: the KV browser — keys by `/`-separated prefix
// (Consul's `?keys&separator=/`), one entry's decoded value, and put and
// delete of a key.

import { api, get, keyPath } from "./api.js";
import { h, add, fill, facts, notice } from "./dom.js";
import { actionStatus, act, roleNote } from "./common.js";

/** Consul's base64 `Value` as text when it is UTF-8, else as a size. */
function decode(value) {
  if (!value) return { text: "", size: 0, binary: false };
  const raw = atob(value);
  const bytes = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  try {
    return { text: new TextDecoder("utf-8", { fatal: true }).decode(bytes), size: bytes.length, binary: false };
  } catch {
    return { text: value, size: bytes.length, binary: true };
  }
}

const parentOf = (key) => key.slice(0, key.lastIndexOf("/") + 1);
const kvHash = (prefix) => `#/kv/${keyPath(prefix)}`;

export const kvView = {
  id: "view-kv",
  nav: "nav-kv",
  title: "KV",
  interval: 5000,
  mount(root, [initial = ""], ctx) {
    const state = { prefix: initial, selected: null };
    const status = actionStatus();
    const crumbs = h("p", { class: "crumbs", id: "kv-crumbs" });
    const keys = h("ul", { class: "keys", id: "kv-keys" });
    const entry = h("div", { id: "kv-entry" });
    const keyInput = h("input", { type: "text", id: "kv-key", placeholder: "app/config/key", autocomplete: "off", spellcheck: false });
    const valueInput = h("textarea", { id: "kv-value", rows: 4, placeholder: "value", spellcheck: false });
    const putButton = h("button", { type: "submit", id: "kv-put" }, "Put");
    keyInput.value = initial;

    const open = async (prefix, selected = null) => {
      state.prefix = prefix;
      state.selected = selected;
      if (location.hash !== kvHash(prefix)) history.pushState(null, "", kvHash(prefix));
      await controller.refresh();
    };

    const form = h(
      "form",
      {
        class: "stack",
        id: "kv-form",
        onsubmit: async (event) => {
          event.preventDefault();
          const key = keyInput.value.trim().replace(/^\/+/, "");
          if (!key || key.endsWith("/")) {
            status.failed("put a key", new Error("give a key name that does not end in /"));
            return;
          }
          const value = valueInput.value;
          const done = await act(putButton, status, `put ${key}`, async () => {
            const stored = await api("PUT", `/v1/kv/${keyPath(key)}`, { body: value });
            if (stored !== true) throw new Error(`the server did not store ${key}`);
            return `stored ${key} (${new TextEncoder().encode(value).length} bytes)`;
          });
          if (done) await open(parentOf(key), key);
        },
      },
      h("h3", {}, "Put a key"),
      h("label", { for: "kv-key" }, "key"),
      keyInput,
      h("label", { for: "kv-value" }, "value"),
      valueInput,
      h("div", {}, putButton),
    );

    add(
      root,
      h("h2", {}, "Key/value store"),
      roleNote(ctx.identity),
      status.box,
      crumbs,
      h("div", { class: "split" }, h("div", { class: "panel" }, keys), h("div", { class: "panel" }, entry, form)),
    );

    const remove = (key) => {
      const button = h("button", { type: "button", id: "kv-delete", class: "danger" }, "Delete");
      button.addEventListener("click", async () => {
        if (!window.confirm(`Delete ${key}?`)) return;
        const done = await act(button, status, `delete ${key}`, async () => {
          await api("DELETE", `/v1/kv/${keyPath(key)}`);
          return `deleted ${key}`;
        });
        if (done) await open(state.prefix);
      });
      return button;
    };

    const showEntry = (found) => {
      if (!found) {
        fill(entry, notice("note", `${state.selected} does not exist (any more).`));
        return;
      }
      const value = decode(found.Value);
      const edit = h("button", { type: "button", class: "secondary", id: "kv-edit" }, "Edit");
      edit.addEventListener("click", () => {
        keyInput.value = found.Key;
        valueInput.value = value.binary ? "" : value.text;
        valueInput.focus();
      });
      fill(
        entry,
        h("h3", { id: "kv-entry-key" }, found.Key),
        facts([
          ["modify index", found.ModifyIndex],
          ["create index", found.CreateIndex],
          ["flags", found.Flags],
          found.Session ? ["locked by session", h("code", {}, found.Session)] : null,
          ["size", `${value.size} bytes${value.binary ? " (binary, shown as base64)" : ""}`],
        ]),
        h("pre", { id: "kv-value-view", class: "value" }, value.text),
        h("div", { class: "actions" }, edit, remove(found.Key)),
      );
    };

    const controller = {
      async refresh() {
        const prefix = state.prefix;
        const [listed, selected] = await Promise.all([
          get(`/v1/kv/${keyPath(prefix)}?keys&separator=/`, { allow404: true }),
          state.selected ? get(`/v1/kv/${keyPath(state.selected)}`, { allow404: true }) : Promise.resolve(undefined),
        ]);
        const parts = prefix.split("/").filter(Boolean);
        fill(
          crumbs,
          h("a", { href: kvHash(""), onclick: (e) => (e.preventDefault(), open("")) }, "(root)"),
          parts.map((part, i) => {
            const to = `${parts.slice(0, i + 1).join("/")}/`;
            return [" / ", h("a", { href: kvHash(to), onclick: (e) => (e.preventDefault(), open(to)) }, part)];
          }),
        );
        const names = listed || [];
        fill(
          keys,
          names.length
            ? names.map((name) => {
                const label = name.slice(prefix.length) || name;
                if (name.endsWith("/") && name !== prefix) {
                  return h("li", { class: "folder" }, h("a", { href: kvHash(name), "data-prefix": name, onclick: (e) => (e.preventDefault(), open(name)) }, label));
                }
                const link = h("a", { href: kvHash(prefix), "data-key": name, class: name === state.selected ? "selected" : "" }, label);
                link.addEventListener("click", (e) => {
                  e.preventDefault();
                  state.selected = name;
                  controller.refresh().catch((err) => status.failed(`read ${name}`, err));
                });
                return h("li", { class: "key" }, link);
              })
            : h("li", { class: "muted" }, prefix ? `nothing under ${prefix}` : "the store is empty"),
        );
        if (selected === undefined) {
          fill(entry, h("p", { class: "muted" }, "Pick a key to see its value."));
        } else {
          showEntry(selected && selected[0]);
        }
      },
    };
    return controller;
  },
};

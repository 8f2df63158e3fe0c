// raftvisor dashboard: the event log, live — new events are polled with
// `?since=<last index>` and shown newest first, at most MAX_ROWS.

import { get } from "./api.js";
import { h, add, fill, table, when } from "./dom.js";
import { actorCell } from "./common.js";

const MAX_ROWS = 500;

export const eventsView = {
  id: "view-events",
  nav: "nav-events",
  title: "Events",
  interval: 2000,
  mount(root) {
    let since = 0;
    let events = [];
    const filter = h("input", { type: "search", id: "events-filter", placeholder: "filter: kind, subject, message or token", autocomplete: "off" });
    const count = h("span", { class: "muted small", id: "events-count" });
    const body = h("div");
    const render = () => {
      const needle = filter.value.trim().toLowerCase();
      const shown = needle
        ? events.filter((e) =>
            [e.kind, e.subject, e.message, e.actor?.token_name, e.actor?.token_id].some((f) => (f || "").toLowerCase().includes(needle)),
          )
        : events;
      count.textContent = `${shown.length} of the last ${events.length} events (up to ${MAX_ROWS}), refreshed every 2 s`;
      fill(
        body,
        table(
          [
            { title: "#", class: "num", cell: (e) => e.index },
            { title: "time", cell: (e) => when(e.time_ms) },
            { title: "kind", cell: (e) => h("code", {}, e.kind) },
            { title: "subject", cell: (e) => e.subject },
            { title: "message", cell: (e) => e.message },
            { title: "by", cell: actorCell },
          ],
          shown,
          { id: "events", empty: needle ? "no event matches" : "no events yet", rowAttrs: (e) => ({ "data-index": e.index, "data-kind": e.kind }) },
        ),
      );
    };
    filter.addEventListener("input", render);
    add(root, h("h2", {}, "Events"), h("div", { class: "toolbar" }, filter, count), body);
    let rendered = false;
    return {
      async refresh() {
        const fresh = await get(`/v1/events?since=${since}`);
        for (const event of fresh) since = Math.max(since, event.index);
        if (fresh.length || !rendered) {
          events = fresh.slice().reverse().concat(events).slice(0, MAX_ROWS);
          render();
          rendered = true;
        }
      },
    };
  },
};

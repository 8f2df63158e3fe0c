// raftvisor dashboard: the cluster, services, service and nodes views.
// A view is { id, nav, title, interval, mount(root, params, ctx) } and
// mount answers { refresh() } — the page calls refresh at once and then
// every `interval` ms; refresh throws an ApiError when a read fails.

import { get, post, seg } from "./api.js";
import { h, add, fill, table, facts, badge, when, duration, notice } from "./dom.js";
import { actionStatus, act, roleNote, concernsService, actorCell } from "./common.js";

// ---- cluster ----

function supervision(status) {
  if (status.leader_id === null || status.leader_id === undefined) return ["no leader", "bad"];
  const ago = status.leader_progress_ms_ago;
  if (ago === null || ago === undefined) return ["unknown", "warn"];
  if (status.stall_after_ms && ago > status.stall_after_ms) return ["stalled", "bad"];
  return ["progressing", "good"];
}

function expiry(text) {
  if (!text) return "—";
  const left = Date.parse(text) - Date.now();
  const node = h("span", {}, `${text.slice(0, 10)} (${left > 0 ? `in ${duration(left)}` : "expired"})`);
  if (left < 14 * 86_400_000) node.className = left > 0 ? "warn" : "bad";
  return node;
}

function card(title, ...children) {
  return h("section", { class: "card" }, h("h3", {}, title), ...children);
}

export const clusterView = {
  id: "view-cluster",
  nav: "nav-cluster",
  title: "Cluster",
  interval: 5000,
  mount(root) {
    const body = h("div");
    add(root, h("h2", {}, "Cluster"), body);
    return {
      async refresh() {
        const [status, health] = await Promise.all([
          get("/v1/cluster"),
          get("/v1/health").catch((err) => ({ status: "unreachable", reason: err.message })),
        ]);
        const [progress, progressClass] = supervision(status);
        const voters = status.members.filter((m) => m.voter).length;
        const leaderMember = status.members.find((m) => m.id === status.leader_id);
        const quorum =
          status.quorum_contact_ms === null || status.quorum_contact_ms === undefined
            ? "—"
            : h(
                "span",
                { class: status.quorum_contact_ms < status.lease_ms ? "good" : "bad" },
                `${duration(status.quorum_contact_ms)} ago (lease ${duration(status.lease_ms)})`,
              );
        fill(
          body,
          h(
            "div",
            { class: "cards" },
            card(
              "Health",
              facts([
                ["this replica", h("span", {}, `#${status.this_id} `, badge(health.status)), "cluster-this"],
                ["leader", status.leader_id ? `#${status.leader_id}${leaderMember ? ` (${leaderMember.api_addr})` : ""}` : h("span", { class: "bad" }, "none"), "cluster-leader"],
                ["supervision", h("span", { class: progressClass }, progress), "cluster-supervision"],
                health.reason ? ["reason", health.reason] : null,
              ]),
            ),
            card(
              "Raft",
              facts([
                ["state", badge(status.state)],
                ["term", status.term, "cluster-term"],
                ["members", `${status.members.length} (${voters} voting)`],
                ["cluster id", h("code", {}, status.cluster_id || "—")],
              ]),
            ),
            card(
              "Log",
              facts([
                ["last log index", status.last_log_index],
                ["applied index", status.applied_index],
                ["apply lag", h("span", { class: status.apply_lag > 100 ? "warn" : "" }, String(status.apply_lag))],
                ["snapshot index", status.snapshot_index],
              ]),
            ),
            card(
              "Supervision progress",
              facts([
                ["last progress", status.leader_last_progress || "—"],
                ["progress age", status.leader_progress_ms_ago === null || status.leader_progress_ms_ago === undefined ? "—" : `${duration(status.leader_progress_ms_ago)} ago`],
                ["stall after", status.stall_after_ms ? duration(status.stall_after_ms) : "watchdog off"],
                ["quorum contact", quorum],
              ]),
            ),
          ),
          h("h3", {}, "Managers"),
          table(
            [
              { title: "id", cell: (m) => h("span", {}, `#${m.id}`, m.id === status.leader_id ? h("span", { class: "tag" }, "leader") : null, m.id === status.this_id ? h("span", { class: "tag muted" }, "this") : null) },
              { title: "API", cell: (m) => h("code", {}, m.api_addr) },
              { title: "peer", cell: (m) => h("code", {}, m.peer_addr) },
              { title: "voter", cell: (m) => (m.voter ? "voter" : "learner") },
              {
                title: "last contact",
                cell: (m) =>
                  m.last_contact_ms === null || m.last_contact_ms === undefined
                    ? "—"
                    : h("span", { class: m.last_contact_ms > 5000 ? "bad" : "" }, m.id === status.this_id ? "self" : `${duration(m.last_contact_ms)} ago`),
              },
              { title: "certificate expires", cell: (m) => expiry(m.certificate_expires) },
            ],
            status.members,
            { id: "members", rowAttrs: (m) => ({ "data-member": m.id }) },
          ),
          h("p", { class: "muted small" }, `Seen from replica #${status.this_id}; data in ${status.data_dir}. Last contact is known on the leader.`),
        );
      },
    };
  },
};

// ---- services ----

const serviceKey = (svc) => `${svc.namespace}/${svc.name}`;
const serviceHash = (namespace, name) => `#/services/${seg(namespace)}/${seg(name)}`;

export const servicesView = {
  id: "view-services",
  nav: "nav-services",
  title: "Services",
  interval: 5000,
  mount(root) {
    const body = h("div");
    add(root, h("h2", {}, "Services"), body);
    return {
      async refresh() {
        const services = await get("/v1/services");
        services.sort((a, b) => serviceKey(a).localeCompare(serviceKey(b)));
        // The running count of each service, while there are few enough.
        const reports = new Map();
        if (services.length <= 40) {
          const answers = await Promise.allSettled(
            services.map((s) => get(`/v1/services/${seg(s.namespace)}/${seg(s.name)}/report`)),
          );
          answers.forEach((a, i) => a.status === "fulfilled" && reports.set(serviceKey(services[i]), a.value));
        }
        fill(
          body,
          table(
            [
              { title: "namespace", cell: (s) => s.namespace },
              { title: "name", cell: (s) => h("a", { href: serviceHash(s.namespace, s.name), "data-service": serviceKey(s) }, s.name) },
              { title: "image", cell: (s) => (s.spec.kind === "external" ? h("span", { class: "muted" }, "external") : h("code", {}, s.spec.image)) },
              { title: "replicas", class: "num", cell: (s) => s.spec.replicas },
              {
                title: "running",
                class: "num",
                cell: (s) => {
                  const r = reports.get(serviceKey(s));
                  if (!r) return "—";
                  return h("span", { class: r.running === r.desired ? "good" : "warn" }, `${r.running}/${r.desired}`);
                },
              },
              { title: "state", cell: (s) => badge(s.run_state) },
              { title: "version", class: "num", cell: (s) => s.version },
            ],
            services,
            { id: "services", empty: "no services deployed", rowAttrs: (s) => ({ "data-row": serviceKey(s) }) },
          ),
        );
      },
    };
  },
};

// ---- one service ----

function ports(instance) {
  if (!instance.ports || !instance.ports.length) return "—";
  return instance.ports.map((p) => `${p.name} ${p.host_port}→${p.container_port}/${p.protocol}`).join(", ");
}

export const serviceView = {
  id: "view-service",
  nav: "nav-services",
  title: "Service",
  interval: 3000,
  mount(root, [namespace, name], ctx) {
    const base = `/v1/services/${seg(namespace)}/${seg(name)}`;
    const what = `${namespace}/${name}`;
    const status = actionStatus();
    const replicas = h("input", { type: "number", id: "scale-replicas", min: 0, step: 1, "aria-label": "replicas" });
    const scaleButton = h("button", { type: "submit", id: "scale-apply" }, "Scale");
    let seeded = false;
    const scaleForm = h(
      "form",
      {
        class: "inline",
        onsubmit: async (event) => {
          event.preventDefault();
          const count = Number.parseInt(replicas.value, 10);
          if (!Number.isInteger(count) || count < 0) {
            status.failed(`scale ${what}`, new Error("the number of replicas must be a whole number ≥ 0"));
            return;
          }
          const done = await act(scaleButton, status, `scale ${what}`, async () => {
            const service = await post(`${base}/scale`, { replicas: count });
            return `${what} scaled to ${service.spec.replicas} replicas (version ${service.version})`;
          });
          if (done) await controller.refresh();
        },
      },
      h("label", { for: "scale-replicas" }, "replicas"),
      replicas,
      scaleButton,
    );
    const lifecycle = (op, label, id) => {
      const button = h("button", { type: "button", id, class: "secondary" }, label);
      button.addEventListener("click", async () => {
        if (op === "stop" && !window.confirm(`Stop every instance of ${what}?`)) return;
        const done = await act(button, status, `${op} ${what}`, async () => {
          const service = await post(`${base}/${op}`);
          return `${what}: ${op} accepted (version ${service.version})`;
        });
        if (done) await controller.refresh();
      });
      return button;
    };
    const summary = h("div");
    const instancesBox = h("div");
    const eventsBox = h("div");
    add(
      root,
      h("p", { class: "crumbs" }, h("a", { href: "#/services" }, "Services"), " / ", namespace, " / ", name),
      h("h2", {}, what),
      h("div", { class: "actions" }, scaleForm, lifecycle("restart", "Restart", "restart"), lifecycle("stop", "Stop", "stop"), lifecycle("start", "Start", "start")),
      roleNote(ctx.identity),
      status.box,
      summary,
      h("h3", {}, "Instances"),
      instancesBox,
      h("h3", {}, "Recent events"),
      eventsBox,
    );
    let since = 0;
    let events = [];
    const controller = {
      async refresh() {
        const [service, report, instances, fresh] = await Promise.all([
          get(base),
          get(`${base}/report`),
          get(`${base}/instances`),
          get(`/v1/events?since=${since}`),
        ]);
        for (const event of fresh) {
          since = Math.max(since, event.index);
          if (concernsService(event, namespace, name)) events.unshift(event);
        }
        events = events.slice(0, 50);
        if (!seeded && document.activeElement !== replicas) {
          replicas.value = String(service.spec.replicas);
          seeded = true;
        }
        const current = instances.length - report.outdated;
        fill(
          summary,
          facts(
            [
              ["replicas", service.spec.replicas, "svc-replicas"],
              ["desired now", report.desired, "svc-desired"],
              ["running", h("span", { class: report.running === report.desired ? "good" : "warn" }, String(report.running)), "svc-running"],
              ["unhealthy", report.unhealthy, "svc-unhealthy"],
              ["crash looping", report.crash_looping],
              ["pending", report.pending],
              ["pulling", report.pulling ?? 0],
              ["pull failed", report.pull_failed ?? 0],
              ["waiting for its node", report.waiting ?? 0],
              ["restarts", report.restarts, "svc-restarts"],
              ["state", badge(report.run_state)],
              ["version", report.version, "svc-version"],
              ["image", h("code", {}, service.spec.image || "—")],
              report.image && report.image !== service.spec.image ? ["resolved", h("code", {}, report.image)] : null,
            ],
            { class: "facts wide" },
          ),
          report.outdated > 0
            ? notice("note", `Rollout in progress: ${current} of ${instances.length} instances run the current version; ${report.outdated} outdated.`, "svc-rollout")
            : null,
          report.rollout_paused ? notice("error", report.rollout_paused, "svc-rollout-paused") : null,
        );
        fill(
          instancesBox,
          table(
            [
              { title: "instance", cell: (i) => h("code", {}, i.id) },
              { title: "slot", class: "num", cell: (i) => i.slot },
              { title: "gen", class: "num", cell: (i) => i.generation },
              { title: "node", cell: (i) => i.node || "—" },
              { title: "state", cell: (i) => badge(i.state) },
              { title: "restarts", class: "num", cell: (i) => i.restarts },
              { title: "address", cell: (i) => i.address || "—" },
              { title: "ports", cell: ports },
              { title: "version", class: "num", cell: (i) => i.spec_version },
              { title: "last exit", cell: (i) => (i.last_exit ? `${i.last_exit.code}: ${i.last_exit.reason} (${when(i.last_exit.at_ms)})` : "—") },
            ],
            instances,
            { id: "instances", empty: "no instances placed", rowAttrs: (i) => ({ "data-instance": i.id, "data-state": i.state }) },
          ),
        );
        fill(
          eventsBox,
          table(
            [
              { title: "time", cell: (e) => when(e.time_ms) },
              { title: "kind", cell: (e) => h("code", {}, e.kind) },
              { title: "subject", cell: (e) => e.subject },
              { title: "message", cell: (e) => e.message },
              { title: "by", cell: actorCell },
            ],
            events.slice(0, 20),
            { id: "service-events", empty: "no events about this service yet" },
          ),
        );
      },
    };
    return controller;
  },
};

// ---- nodes ----

/** Instances per node name, over every service (few services only). */
async function instancesByNode() {
  const services = await get("/v1/services");
  if (services.length > 40) return null;
  const lists = await Promise.all(services.map((s) => get(`/v1/services/${seg(s.namespace)}/${seg(s.name)}/instances`)));
  const counts = new Map();
  for (const instance of lists.flat()) {
    if (!instance.node) continue;
    const count = counts.get(instance.node) || { all: 0, running: 0 };
    count.all += 1;
    if (instance.state === "running") count.running += 1;
    counts.set(instance.node, count);
  }
  return counts;
}

function labels(spec) {
  const entries = Object.entries(spec.labels || {});
  if (!entries.length) return "—";
  return h("span", {}, entries.map(([k, v]) => h("span", { class: "tag" }, `${k}=${v}`)));
}

export const nodesView = {
  id: "view-nodes",
  nav: "nav-nodes",
  title: "Nodes",
  interval: 5000,
  mount(root, _params, ctx) {
    const status = actionStatus();
    const body = h("div");
    add(root, h("h2", {}, "Nodes"), roleNote(ctx.identity), status.box, body);
    const drain = (node, cancel) => {
      const label = cancel ? "Cancel drain" : "Drain";
      const button = h("button", { type: "button", class: cancel ? "secondary" : "danger", "data-drain": node.name }, label);
      button.addEventListener("click", async () => {
        if (!cancel && !window.confirm(`Drain node ${node.name}? Its instances move to other nodes.`)) return;
        const what = cancel ? `cancel the drain of node ${node.name}` : `drain node ${node.name}`;
        const done = await act(button, status, what, async () => {
          const answer = await post(`/v1/nodes/${seg(node.name)}/drain`, cancel ? { cancel: true } : undefined);
          return `node ${node.name} is ${answer.state}`;
        });
        if (done) await controller.refresh();
      });
      return button;
    };
    const controller = {
      async refresh() {
        const [nodes, counts] = await Promise.all([get("/v1/nodes"), instancesByNode().catch(() => null)]);
        nodes.sort((a, b) => a.name.localeCompare(b.name));
        fill(
          body,
          table(
            [
              { title: "name", cell: (n) => h("strong", {}, n.name) },
              { title: "state", cell: (n) => badge(n.state) },
              { title: "engine", cell: (n) => h("code", {}, n.spec.docker_endpoint) },
              { title: "provider", cell: (n) => n.spec.provider },
              { title: "address", cell: (n) => n.spec.address || "—" },
              { title: "region / zone", cell: (n) => [n.spec.region, n.spec.zone].filter(Boolean).join(" / ") || "—" },
              { title: "labels", cell: (n) => labels(n.spec) },
              {
                title: "instances",
                class: "num",
                cell: (n) => {
                  if (!counts) return "—";
                  const c = counts.get(n.name) || { all: 0, running: 0 };
                  return `${c.running} running / ${c.all}`;
                },
              },
              { title: "", cell: (n) => (n.state === "retired" ? "—" : drain(n, n.state === "draining")) },
            ],
            nodes,
            { id: "nodes", empty: "no nodes registered", rowAttrs: (n) => ({ "data-node": n.name }) },
          ),
        );
      },
    };
    return controller;
  },
};

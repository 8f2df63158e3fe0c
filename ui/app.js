// raftvisor dashboard: sign-in, the header, hash routing and the refresh
// loop of the current view. The dashboard reads and writes only through
// the replica's /v1 API with the signed-in token; the server decides what
// that token may do, and the page shows its answers as they are.

import { ApiError, get, storedToken, storeToken, forgetToken, onUnauthorized } from "./api.js";
import { h, notice } from "./dom.js";
import { refusal } from "./common.js";
import { clusterView, servicesView, serviceView, nodesView } from "./views.js";
import { kvView } from "./kv.js";
import { eventsView } from "./events.js";

const $ = (id) => document.getElementById(id);

const page = {
  signIn: $("sign-in-view"),
  form: $("sign-in-form"),
  token: $("token"),
  signInButton: $("sign-in"),
  signInError: $("sign-in-error"),
  shell: $("shell"),
  whoName: $("who-name"),
  whoRole: $("who-role"),
  signOut: $("sign-out"),
  main: $("main"),
};

const NAV = ["nav-cluster", "nav-services", "nav-nodes", "nav-kv", "nav-events"];

/** Who is signed in: the answer of GET /v1/tokens/self. */
let identity = null;
/** Bumped on every mount and sign-out: stops the previous refresh loop. */
let generation = 0;
let timer = null;

const decodePath = (text) => text.split("/").map(decodeURIComponent).join("/");

/** The view and its parameters for a location hash. */
function resolve(hash) {
  const path = hash.replace(/^#\/?/, "");
  const parts = path.split("/");
  try {
    switch (parts[0]) {
      case "services":
        if (parts.length >= 3 && parts[1] && parts[2]) {
          return [serviceView, [decodeURIComponent(parts[1]), decodeURIComponent(parts[2])]];
        }
        return [servicesView, []];
      case "nodes":
        return [nodesView, []];
      case "kv":
        return [kvView, [decodePath(parts.slice(1).join("/"))]];
      case "events":
        return [eventsView, []];
      default:
        return [clusterView, []];
    }
  } catch {
    return [clusterView, []];
  }
}

function stop() {
  generation += 1;
  clearTimeout(timer);
  timer = null;
}

/** Mounts the view of the current hash and refreshes it until replaced. */
function route() {
  if (!identity) return;
  stop();
  const mine = generation;
  const [view, params] = resolve(location.hash);
  for (const id of NAV) {
    const link = $(id);
    const active = id === view.nav;
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const problem = notice("error", "", "view-error");
  problem.hidden = true;
  const root = h("section", { id: view.id, class: "view", "data-loaded": "false" }, problem);
  page.main.replaceChildren(root);
  document.title = `${view.title} · raftvisor`;
  let controller;
  try {
    controller = view.mount(root, params, { identity });
  } catch (err) {
    problem.textContent = `this page could not be shown: ${err.message}`;
    problem.hidden = false;
    return;
  }
  const tick = async () => {
    if (mine !== generation) return;
    try {
      await controller.refresh();
      if (mine !== generation) return;
      root.dataset.loaded = "true";
      problem.hidden = true;
    } catch (err) {
      if (mine !== generation) return;
      if (err instanceof ApiError && err.status === 401) return; // signed out already
      problem.textContent = refusal(`read this ${view.title.toLowerCase()} page`, err);
      problem.hidden = false;
    }
    if (mine === generation) timer = setTimeout(tick, document.hidden ? view.interval * 3 : view.interval);
  };
  tick();
}

function showSignIn(message) {
  stop();
  identity = null;
  page.main.replaceChildren();
  page.shell.hidden = true;
  page.signIn.hidden = false;
  page.signInError.textContent = message || "";
  page.signInError.hidden = !message;
  document.title = "Sign in · raftvisor";
  page.token.focus();
}

function showShell(who) {
  identity = who;
  page.whoName.textContent = who.name || who.id;
  page.whoRole.textContent = who.role;
  page.whoRole.className = `badge role-${who.role}`;
  const limits = [
    Array.isArray(who.namespaces) ? `namespaces: ${who.namespaces.join(", ") || "none"}` : null,
    Array.isArray(who.kv_prefixes) ? `KV prefixes: ${who.kv_prefixes.join(", ") || "none"}` : null,
  ].filter(Boolean);
  page.whoName.title = [`token ${who.id}`, ...limits].join("\n");
  page.signIn.hidden = true;
  page.signInError.hidden = true;
  page.shell.hidden = false;
  if (!location.hash || location.hash === "#" || location.hash === "#/") {
    history.replaceState(null, "", "#/cluster");
  }
  route();
}

/** Asks the server who the stored token is; a refusal leaves sign-in shown. */
async function identify() {
  try {
    showShell(await get("/v1/tokens/self", { quiet401: true }));
  } catch (err) {
    forgetToken();
    const message =
      err instanceof ApiError && err.status === 401
        ? `The server refused this token: ${err.describe()}`
        : `Could not sign in: ${err instanceof ApiError ? err.describe() : err.message}`;
    showSignIn(message);
  }
}

page.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = page.token.value.trim();
  if (!token) {
    showSignIn("Enter an API token.");
    return;
  }
  page.signInButton.disabled = true;
  page.signInError.hidden = true;
  storeToken(token);
  try {
    await identify();
  } finally {
    page.signInButton.disabled = false;
    if (identity) page.token.value = "";
  }
});

page.signOut.addEventListener("click", () => {
  forgetToken();
  page.token.value = "";
  showSignIn();
});

onUnauthorized((err) => {
  forgetToken();
  showSignIn(`Signed out: the server no longer accepts this token (${err.describe()}).`);
});

window.addEventListener("hashchange", route);

if (storedToken()) identify();
else showSignIn();

// raftvisor dashboard: what every view shares — its action status line,
// how refusals are worded, and the note shown to read-only tokens.

import { h, notice } from "./dom.js";

/**
 * The status line of a view's actions: `#action-result` (success) and
 * `#action-error` (the server's refusal, word for word). One view is in
 * the page at a time, so the ids are unique.
 */
export function actionStatus() {
  const result = notice("ok", "", "action-result");
  const error = notice("error", "", "action-error");
  result.hidden = true;
  error.hidden = true;
  const box = h("div", { class: "action-status" }, result, error);
  return {
    box,
    clear() {
      result.hidden = true;
      error.hidden = true;
      result.textContent = "";
      error.textContent = "";
    },
    ok(text) {
      error.hidden = true;
      result.textContent = text;
      result.hidden = false;
    },
    failed(what, err) {
      result.hidden = true;
      error.textContent = refusal(what, err);
      error.hidden = false;
    },
  };
}

/** How a failed `what` ("scale demo/echo") is told: 403s say the token may not. */
export function refusal(what, err) {
  const detail = typeof err?.describe === "function" ? err.describe() : String(err);
  if (err?.status === 403) return `this token may not ${what} — ${detail}`;
  return `could not ${what} — ${detail}`;
}

/**
 * Runs `work` for a button: the button is disabled meanwhile and the
 * outcome lands in `status`. The server decides what a token may do; the
 * page offers every action and shows its answer.
 */
export async function act(button, status, what, work) {
  status.clear();
  button.disabled = true;
  try {
    const text = await work();
    status.ok(text || `${what}: done`);
    return true;
  } catch (err) {
    status.failed(what, err);
    return false;
  } finally {
    button.disabled = false;
  }
}

/** A hint for read-only tokens: changes will be refused by the server. */
export function roleNote(identity) {
  if (!identity || identity.role !== "read") return null;
  return notice(
    "note",
    "This token has the read role: actions are shown, and the server refuses them (403).",
    "role-note",
  );
}

/** The subject test of a service's events: the service, or its instances. */
export function concernsService(event, namespace, name) {
  const subject = event.subject || "";
  return (
    subject === `${namespace}/${name}` ||
    subject.startsWith(`${namespace}/${name}/`) ||
    subject.startsWith(`${namespace}.${name}.`) ||
    subject.startsWith(`${namespace}-${name}-`)
  );
}

/** Who caused an event: the token's name, or raftvisor itself. */
export function actorCell(event) {
  if (!event.actor) return h("span", { class: "muted" }, "raftvisor");
  return h("span", { class: "actor", title: `token ${event.actor.token_id}` }, event.actor.token_name || event.actor.token_id);
}

// raftvisor dashboard: the one way to talk to the /v1 API. Every call
// carries the signed-in token as a bearer token; every failure becomes an
// ApiError holding the server's own status, code and message.

const TOKEN_KEY = "raftvisor.token";

/** A refused or failed API call: the HTTP status and the server's words. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || (status ? `http_${status}` : "network");
  }

  /** "403 forbidden: this needs a token with the operator role; …" */
  describe() {
    return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
  }
}

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

let unauthorizedHandler = () => {};

/** Pause before a failed read is asked once more. */
const READ_RETRY_MS = 300;

/** Called with the ApiError whenever the server answers 401. */
export function onUnauthorized(handler) {
  unauthorizedHandler = handler;
}

/**
 * `method path` with an optional JSON body (`json`) or raw body (`body`).
 * Answers the parsed JSON (or text); `null` for a 404 when `allow404`.
 */
export async function api(method, path, { json, body, allow404 = false, quiet401 = false } = {}) {
  const headers = { Accept: "application/json" };
  const token = storedToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload = body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(json);
  }
  const send = () =>
    fetch(path, {
      method,
      headers,
      body: payload,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  let response;
  try {
    response = await send();
  } catch (error) {
    // A read that failed before any answer (the browser saw the network
    // change, a connection reset) is asked once more: it changes nothing.
    // A write is not, as it may have reached the replica.
    if (method !== "GET" && method !== "HEAD") {
      throw new ApiError(0, "network", `the replica did not answer: ${error.message}`);
    }
    await new Promise((resolve) => setTimeout(resolve, READ_RETRY_MS));
    try {
      response = await send();
    } catch (again) {
      throw new ApiError(0, "network", `the replica did not answer: ${again.message}`);
    }
  }
  const text = await response.text();
  let data = text;
  if ((response.headers.get("content-type") || "").includes("json") && text !== "") {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (response.ok) return data;
  if (response.status === 404 && allow404) return null;
  const error =
    data && typeof data === "object"
      ? new ApiError(response.status, data.code, data.error)
      : new ApiError(response.status, null, text.trim() || response.statusText);
  if (response.status === 401 && !quiet401) unauthorizedHandler(error);
  throw error;
}

export const get = (path, options) => api("GET", path, options);
export const post = (path, json) => api("POST", path, { json });

/** A path segment of a URL: every reserved character escaped. */
export const seg = (text) => encodeURIComponent(text);

/** A KV key as a URL path: each `/`-separated part escaped, slashes kept. */
export const keyPath = (key) => key.split("/").map(encodeURIComponent).join("/");

// The page's only way to the server: the public REST API, with the viewer's bearer token.
// Every error becomes an ApiError carrying the server's own sentence (`detail`).

import { currentToken } from "./token.js";

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
    this.detail = detail;
  }
}

const unauthorizedListeners = new Set();

/** `listener(detail)` runs whenever the server answers 401: the token is missing or wrong. */
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
}

export function authHeaders(extra = {}) {
  const token = currentToken();
  return token ? { ...extra, Authorization: `Bearer ${token}` } : { ...extra };
}

function sentence(body, status) {
  const detail = body && body.detail;
  if (typeof detail === "string" && detail) return detail;
  // FastAPI's own validation answers carry a list; Tandem's gateway makes them
  // sentences, but a proxy in front might not.
  if (Array.isArray(detail) && detail.length) return detail.map((d) => d.msg || d).join("; ");
  return `the server answered ${status}`;
}

/** Calls `path` (`/api/...`) and returns its JSON. `body` (an object) is sent as JSON. */
export async function request(path, { method = "GET", body, signal } = {}) {
  const headers = authHeaders({ Accept: "application/json" });
  const init = { method, headers, signal, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "the Tandem server cannot be reached");
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const detail = sentence(payload, response.status);
    if (response.status === 401) unauthorizedListeners.forEach((listener) => listener(detail));
    throw new ApiError(response.status, detail);
  }
  return payload;
}

export const get = (path, options) => request(path, options);
export const post = (path, body, options) => request(path, { ...options, method: "POST", body });

/** `/api/v2/tasks` with `query` (state, limit, page_token) as its query string. */
export function listTasks(query, options) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, value);
  }
  return get(`/api/v2/tasks?${params}`, options);
}

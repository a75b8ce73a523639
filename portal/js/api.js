// The gateway's HTTP API (docs/http-api.md), same origin. Tokens (docs/portal.md):
// the access token lives only in this module's memory; the refresh token in sessionStorage
// (this tab only, gone when it closes), so a reload can resume the session. Neither is ever
// put in a URL. The access token is refreshed a minute before it expires; logout revokes the
// refresh token on the server and forgets both.
const BASE = "/api/v1";
const REFRESH_KEY = "swms.portal.refresh";
const EARLY_MS = 60_000;

let access = null;          // {token, expiresAt: Date, role, subject}
let refreshTimer = null;
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, body) {
    super(body.message || body.detail || "请求失败");
    this.status = status;
    this.code = body.code || "INTERNAL_ERROR";
    this.field = body.field || null;
    this.details = Array.isArray(body.details) ? body.details : [];
    this.requestId = body.request_id || null;
  }
}

export function onSessionChange(listener) { listeners.add(listener); }
function changed() { for (const listener of listeners) listener(currentUser()); }

export function currentUser() {
  return access ? { role: access.role, subject: access.subject } : null;
}

function keep(tokens) {
  access = { token: tokens.access_token, expiresAt: new Date(tokens.expires_at),
             role: tokens.role, subject: tokens.subject };
  if (tokens.refresh_token) sessionStorage.setItem(REFRESH_KEY, tokens.refresh_token);
  clearTimeout(refreshTimer);
  const wait = Math.max(5_000, access.expiresAt - Date.now() - EARLY_MS);
  refreshTimer = setTimeout(() => refresh().catch(() => forget()), wait);
  changed();
}

function forget() {
  access = null;
  clearTimeout(refreshTimer);
  sessionStorage.removeItem(REFRESH_KEY);
  changed();
}

async function send(method, path, body, token) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers["Authorization"] = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(BASE + path, { method, headers, credentials: "omit", cache: "no-store",
                                          body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError(0, { code: "NETWORK", message: "网络连接失败，请检查网络后重试" });
  }
  const text = await response.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = {}; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

let refreshing = null;
export function refresh() {
  const token = sessionStorage.getItem(REFRESH_KEY);
  if (!token) return Promise.reject(new ApiError(401, { code: "AUTH_REQUIRED", message: "请先登录" }));
  refreshing = refreshing || send("POST", "/sessions/refresh", { refresh_token: token })
    .then(keep, (error) => { if (error.status === 401 || error.status === 403) forget(); throw error; })
    .finally(() => { refreshing = null; });
  return refreshing;
}

/** Resume a session after a reload (refresh token of this tab), quietly. */
export async function resume() {
  if (access || !sessionStorage.getItem(REFRESH_KEY)) return currentUser();
  try { await refresh(); } catch { /* logged out */ }
  return currentUser();
}

export async function call(method, path, body) {
  if (access && access.expiresAt - Date.now() < 5_000) await refresh().catch(() => forget());
  try {
    return await send(method, path, body, access && access.token);
  } catch (error) {
    if (error.status === 401 && error.code === "TOKEN_EXPIRED" && sessionStorage.getItem(REFRESH_KEY)) {
      await refresh();
      return send(method, path, body, access && access.token);
    }
    if (error.status === 401 && access) forget();
    throw error;
  }
}

export const get = (path, params) => {
  const query = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null)) : null;
  return call("GET", path + (query && [...query].length ? `?${query}` : ""));
};
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
export const put = (path, body) => call("PUT", path, body);
export const del = (path) => call("DELETE", path);

export async function login(loginName, password) {
  keep(await send("POST", "/sessions", { login: loginName, password }));
  return currentUser();
}

export async function logout() {
  const token = sessionStorage.getItem(REFRESH_KEY);
  forget();
  if (token) await send("POST", "/sessions/logout", { refresh_token: token }).catch(() => {});
}

/** Posts a file straight to object storage with a presigned form (url + fields), file last. */
export async function postToStorage(ticket, file) {
  const form = new FormData();
  for (const [name, value] of Object.entries(ticket.fields)) form.append(name, value);
  form.append("file", file);
  let response;
  try {
    response = await fetch(ticket.url, { method: "POST", body: form, credentials: "omit" });
  } catch {
    throw new ApiError(0, { code: "UPLOAD_FAILED", field: "file", message: "文件上传失败，请检查网络后重试" });
  }
  if (!response.ok) {
    const tooLarge = (await response.text()).includes("EntityTooLarge");
    throw new ApiError(response.status, { code: tooLarge ? "FILE_TOO_LARGE" : "UPLOAD_FAILED", field: "file",
      message: tooLarge ? `文件过大（不超过 ${Math.round(ticket.max_bytes / 1024)} KB）` : "文件上传失败，请重试" });
  }
}

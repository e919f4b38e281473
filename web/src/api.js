// The session (access + refresh token) and every call to the server.
//
// The access token is renewed with the refresh token (POST /auth/refresh) before it
// expires — a timer fires at half of its life — and again whenever a call answers 401.
// When the refresh token is refused too, the session ends: the page shows "signed out"
// and keeps working as an anonymous visitor (public layers keep showing). A token is
// only ever sent while it is still valid, so no tile request carries an expired token.

const KEY = "canopy.session";
const listeners = new Set();
let session = load();          // {access, refresh, accessExp (ms), user} or null
let timer = null;
let refreshing = null;         // the refresh in flight (one at a time)
export const stats = { renewals: 0, endedReason: "" };

function decode(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch (err) {
    return {};
  }
}

function load() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(KEY) || "null");
    return saved && saved.refresh ? saved : null;
  } catch (err) {
    return null;
  }
}

function save() {
  if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
  else sessionStorage.removeItem(KEY);
  document.body.dataset.signedIn = session ? "1" : "0";
  for (const fn of listeners) fn(session);
}

export function onSessionChange(fn) {
  listeners.add(fn);
}

export function currentUser() {
  return session ? session.user : null;
}

/** The access token if it is still valid for at least a second, else null. */
export function validToken() {
  if (!session || !session.access) return null;
  return Date.now() < session.accessExp - 1000 ? session.access : null;
}

export function authHeaders() {
  const token = validToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function schedule() {
  clearTimeout(timer);
  if (!session) return;
  const life = session.accessExp - session.issued;
  const at = session.issued + Math.max(500, life * 0.5);
  timer = setTimeout(() => refresh().catch(() => {}), Math.max(0, at - Date.now()));
}

/** Take a new access token asked for at `asked` (ms, this clock): it expires `exp - iat` after it
 * was issued, which is after it was asked for. Counting from `asked` holds whatever the clocks of
 * the server and this machine say, and however late the answer is read. */
function setAccess(access, asked) {
  const claims = decode(access);
  const life = Math.max(0, ((claims.exp || 0) - (claims.iat || 0)) * 1000);
  session.access = access;
  session.issued = asked;
  session.accessExp = asked + life - 1000;     // iat is rounded down to the second
  document.body.dataset.tokenExp = String(session.accessExp);
}

export async function signIn(username, password) {
  const asked = Date.now();
  const response = await fetch("/auth/token", {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({ username, password }),
  });
  if (!response.ok) {
    const problem = await response.json().catch(() => ({}));
    throw new Error(problem.detail || `sign-in failed (HTTP ${response.status})`);
  }
  const tokens = await response.json();
  session = { refresh: tokens.refresh_token, user: { name: username } };
  setAccess(tokens.access_token, asked);
  stats.endedReason = "";
  const me = await fetch("/auth/me", { headers: { Accept: "application/json", ...authHeaders() } });
  if (me.ok) session.user = await me.json();
  save();
  schedule();
}

/** Read the user (and their project roles) again, e.g. after they made a project. */
export async function reloadMe() {
  if (!session) return;
  const me = await api("/auth/me");
  if (me.ok && session) {
    session.user = await me.json();
    save();
  }
}

export async function signOut(reason = "") {
  const headers = authHeaders();
  const had = Boolean(session);
  clearTimeout(timer);
  session = null;
  stats.endedReason = reason;
  if (had && headers.Authorization) {
    fetch("/auth/logout", { method: "POST", headers }).catch(() => {});
  }
  save();
}

/** Renew the access token; ends the session when the refresh token is refused. */
export function refresh() {
  if (!session) return Promise.reject(new Error("not signed in"));
  if (refreshing) return refreshing;
  refreshing = (async () => {
    let response;
    const asked = Date.now();
    try {
      response = await fetch("/auth/refresh", {
        method: "POST", headers: { Authorization: `Bearer ${session.refresh}`, Accept: "application/json" },
      });
    } catch (err) {
      // the network is away: try again soon, keep the session
      clearTimeout(timer);
      timer = setTimeout(() => refresh().catch(() => {}), 3000);
      throw err;
    }
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      await signOut(`your session ended (${problem.detail || `HTTP ${response.status}`}); sign in again`);
      throw new Error("session ended");
    }
    setAccess((await response.json()).access_token, asked);
    stats.renewals += 1;
    document.body.dataset.renewals = String(stats.renewals);
    save();
    schedule();
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/** A valid access token (renewed first when less than `share` of its life, and at least 3 s, is
 * left), or null when signed out. Requests can wait in the browser's queue for a connection
 * before they leave, so tiles ask for a token with a good margin. */
export async function freshToken(share = 0) {
  if (!session) return null;
  const margin = Math.max(3000, share * (session.accessExp - session.issued));
  if (!validToken() || session.accessExp - Date.now() < margin) {
    try {
      await refresh();
    } catch (err) {
      return null;
    }
  }
  return validToken();
}

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detail);
    this.status = status;
    this.body = body;
  }
}

/** fetch() against this server with the session's token; one renewal and retry on 401. */
export async function api(path, options = {}) {
  const send = async () => {
    const token = await freshToken();
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    return fetch(path, { ...options, headers });
  };
  let response = await send();
  if (response.status === 401 && session) {
    try {
      await refresh();
      response = await send();
    } catch (err) { /* signed out now: the answer stands */ }
  }
  return response;
}

export async function apiJSON(path, options = {}) {
  const response = await api(path, options);
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (err) {
    body = text;
  }
  if (!response.ok) {
    const detail = (body && (body.detail || body.description || body.title)) || `HTTP ${response.status}`;
    throw new ApiError(response.status, `${path}: ${detail}`, body);
  }
  return body;
}

// a session restored from sessionStorage (a reload): renew at once if need be
document.body.dataset.signedIn = session ? "1" : "0";
if (session) {
  if (!validToken()) refresh().catch(() => {});
  else schedule();
}

// The console's only way to the server: tally's public HTTP JSON API, same origin.
//
// Tokens live in this module's memory and nowhere else: not in localStorage or sessionStorage
// (any script of the origin reads those, and they outlive the tab), not in a cookie (the API
// takes a bearer header, and a cookie would need CSRF defences), never in a URL. The price is
// that a reload logs you out; docs/console.md says why that is the trade we make.
//
// The access token is short-lived; the refresh token rotates on every refresh, and presenting
// a used one revokes the whole session. So refreshes are single-flight: every call that finds
// the access token stale (or gets a 401) waits for the one refresh in progress.

let session = null;
let refreshing = null;
let onExpired = () => {};

// Refresh this long before the access token expires, so a call never starts with a dying one.
const REFRESH_MARGIN_MS = 20_000;

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.message) || `The server answered HTTP ${status}.`;
    super(message);
    this.status = status;
    this.body = body;
    const info = (body?.details ?? []).find((d) => d["@type"]?.endsWith("google.rpc.ErrorInfo"));
    this.reason = info?.reason ?? "";
    const bad = (body?.details ?? []).find((d) => d["@type"]?.endsWith("google.rpc.BadRequest"));
    this.field = bad?.fieldViolations?.[0]?.field ?? "";
  }
}

export class NetworkError extends Error {
  constructor() {
    super("The server could not be reached. Check the connection and try again.");
  }
}

export function whenExpired(callback) {
  onExpired = callback;
}

export function current() {
  return session;
}

function remember(tokens) {
  session = {
    ...session,
    accessToken: tokens.accessToken,
    accessExpiresAt: Date.parse(tokens.accessTokenExpiresAt),
    refreshToken: tokens.refreshToken,
  };
}

async function send(method, path, body, token) {
  const headers = { accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new NetworkError();
  }
  let parsed = null;
  const text = await response.text().catch(() => "");
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { message: text.slice(0, 300) };
    }
  }
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

function expire(message) {
  session = null;
  refreshing = null;
  onExpired(message);
}

async function refresh() {
  if (!refreshing) {
    const token = session?.refreshToken;
    refreshing = (async () => {
      if (!token) throw new ApiError(401, { message: "Not logged in." });
      try {
        const tokens = await send("POST", "/v1/sessions:refresh", { refreshToken: token });
        remember(tokens);
      } catch (error) {
        if (error instanceof ApiError) expire("Your session has ended. Log in again.");
        throw error;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

// One API call. Public calls pass `{ auth: false }`. A 401 on a signed-in call refreshes the
// session once and retries; when that fails too, the session is over.
export async function call(method, path, body, { auth = true } = {}) {
  if (!auth) return send(method, path, body, null);
  if (!session) throw new ApiError(401, { message: "Log in first." });
  if (refreshing) await refreshing.catch(() => {});
  if (session && session.accessExpiresAt - Date.now() < REFRESH_MARGIN_MS) await refresh();
  try {
    return await send(method, path, body, session.accessToken);
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401 || !session) throw error;
    await refresh();
    return send(method, path, body, session.accessToken);
  }
}

export async function login(username, password) {
  const answer = await send("POST", "/v1/sessions", { username, password });
  session = { sessionId: answer.sessionId, user: answer.user };
  remember(answer);
  return answer.user;
}

export function setUser(user) {
  if (session) session.user = user;
}

export async function logout() {
  const id = session?.sessionId;
  try {
    if (id) await call("DELETE", `/v1/sessions/${encodeURIComponent(id)}`);
  } finally {
    session = null;
  }
}

// A server stream (NDJSON): calls `onMessage` with each message until `signal` aborts or the
// stream ends; resolves then, rejects on an error answer or a dropped connection.
export async function stream(path, onMessage, signal) {
  if (!session) throw new ApiError(401, { message: "Log in first." });
  if (session.accessExpiresAt - Date.now() < REFRESH_MARGIN_MS) await refresh();
  let response;
  try {
    response = await fetch(path, {
      headers: { accept: "application/x-ndjson", authorization: `Bearer ${session.accessToken}` },
      credentials: "omit",
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (signal?.aborted) return;
    throw new NetworkError();
  }
  if (!response.ok) {
    const text = await response.text().catch(() => "");
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
    throw new ApiError(response.status, body);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (!line) continue;
        const message = JSON.parse(line);
        if (message.error) throw new ApiError(500, message.error);
        if (message.code && message.message && !message.result) throw new ApiError(500, message);
        onMessage(message.result ?? message);
      }
    }
  } catch (error) {
    if (signal?.aborted) return;
    throw error instanceof ApiError ? error : new NetworkError();
  }
}

// Forgets the session here (after it was revoked some other way).
export function forget() {
  session = null;
  refreshing = null;
}

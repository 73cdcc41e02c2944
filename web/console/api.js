// The admin API as the console calls it: the key, kept in this tab's
// sessionStorage (gone when the tab closes, never in a cookie, never in a
// URL), sent as `Authorization: Bearer` on every request. Every path is
// relative to this page's origin: the console works wherever the admin
// listener is reached from, an SSH tunnel included.

const KEY = 'turnpike.console.key';

/** An answer other than 2xx; `status` 0 when the server was not reached. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  forget: () => sessionStorage.removeItem(KEY),
};

/** One request to the admin API; resolves to its JSON body. */
export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${key.get() ?? ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (e) {
    throw new ApiError(0, `the admin listener is unreachable (${e.message})`);
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    // An empty or non-JSON answer: the status says enough.
  }
  if (!response.ok) {
    throw new ApiError(response.status, json?.error ?? `HTTP ${response.status}`);
  }
  return json;
}

export const api = {
  history: (since) => call('GET', since === undefined ? '/v1/history' : `/v1/history?since=${since}`),
  allocations: () => call('GET', '/v1/allocations'),
  revocations: () => call('GET', '/v1/revocations'),
  fleet: () => call('GET', '/v1/fleet'),
  endAllocation: (id) => call('DELETE', `/v1/allocations/${encodeURIComponent(id)}`),
  endUser: (user) => call('DELETE', `/v1/users/${encodeURIComponent(user)}/allocations`),
  revoke: (username) => call('POST', '/v1/revocations', { username }),
};

// The API key, when the server wants one: asked for once (the server answered 401),
// kept in this browser, and sent on every request: as a bearer header on fetch, and on
// the WebSocket as a subprotocol (a browser WebSocket cannot set headers, and a key in
// the URL would end up in access logs).

const KEY = "speculate.apiKey";

export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// The WebSocket subprotocols to offer: "speculate", and the key if there is one.
export function subprotocols() {
  const key = apiKey();
  return key ? ["speculate", `speculate.bearer.${base64url(key)}`] : ["speculate"];
}

// fetch with the key; a 401 tells the page to ask for one.
export async function apiFetch(url, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(url, { ...options, headers });
  if (response.status === 401) window.dispatchEvent(new Event("speculate:unauthorized"));
  return response;
}

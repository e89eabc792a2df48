// The viewer's bearer token, kept in sessionStorage: it lives as long as this tab and
// is never put in a URL or a cookie, so no other site can make the browser send it.

const KEY = "tandem.token";

export function getToken() {
  try {
    return sessionStorage.getItem(KEY) || "";
  } catch {
    return ""; // storage disabled: the page asks again on each load
  }
}

export function setToken(token) {
  try {
    sessionStorage.setItem(KEY, token);
  } catch {
    // Storage disabled: the token still works until the page is reloaded.
  }
  memory = token;
}

export function clearToken() {
  try {
    sessionStorage.removeItem(KEY);
  } catch {
    // nothing kept
  }
  memory = "";
}

let memory = "";

/** The token to send: the stored one, or the one given in this page's life when the
 *  browser refuses storage. */
export function currentToken() {
  return getToken() || memory;
}

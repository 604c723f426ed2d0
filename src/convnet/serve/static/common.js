// What both pages share: calling the JSON API and building DOM nodes. An ES module, served as is.

/** JSON from the API, or an Error whose message is the server's one-sentence `detail`. */
export async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch {
    throw new Error("The server did not answer; check that convnet serve is still running.");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // A non-JSON answer: the status line below says what happened.
  }
  if (!response.ok) throw new Error(detailOf(body) || `The server answered ${response.status} ${response.statusText}.`);
  return body;
}

function detailOf(body) {
  if (!body || body.detail === undefined) return "";
  if (typeof body.detail === "string") return body.detail;
  if (Array.isArray(body.detail)) return body.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return JSON.stringify(body.detail);
}

/** document.createElement with attributes ("class", "text", "on<event>" handlers, the rest as is) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

/** Put a sentence in the page's #error area (role="alert"); an empty one hides it. */
export function showError(message) {
  document.getElementById("error").textContent = message || "";
}

// The orderflow console: the REST API and the live stream, with the operator's token.
// Plain JavaScript, no build step. Everything shown is built with textContent, never HTML.
"use strict";

const TERMINAL = new Set(["COMPLETED", "CANCELLED"]);
const orders = new Map(); // order_id -> the order as the API shows it (summary or full view)
let selected = null;
let token = null;

// The token arrives in the URL's fragment (never sent to a server) or is pasted in.
function loadToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem("orderflow-token", fragment.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("orderflow-token");
}

function showSignIn(message) {
  token = null;
  sessionStorage.removeItem("orderflow-token");
  document.getElementById("console").hidden = true;
  const signIn = document.getElementById("sign-in");
  signIn.hidden = false;
  if (message) signIn.querySelector("p").textContent = message;
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: `Bearer ${token}` },
  });
  if (response.status === 401) {
    showSignIn("The token was refused (expired or not signed by the identity provider). Paste a new one.");
    throw new Error("unauthorized");
  }
  return response;
}

async function problemText(response) {
  try {
    const problem = await response.json();
    const fields = (problem.errors || []).map((e) => `${e.field}: ${e.message}`).join("; ");
    return [problem.title, problem.detail, fields].filter(Boolean).join(" — ");
  } catch {
    return `HTTP ${response.status}`;
  }
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

const money = (minor, currency) => `${(minor / 100).toFixed(2)} ${currency}`;
const time = (at) => new Date(at).toLocaleTimeString([], { hour12: false });
const preciseTime = (at) =>
  new Date(at).toLocaleTimeString([], {
    hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
  });
const shortId = (id) => id.slice(-8);

// --- the list ---------------------------------------------------------------------------

function upsert(order) {
  const known = orders.get(order.order_id);
  // Updates can cross: an older read never replaces a newer one.
  if (known && Date.parse(known.updated_at) > Date.parse(order.updated_at)) return;
  orders.set(order.order_id, { ...known, ...order });
  renderList();
  if (selected === order.order_id && order.timeline) renderOrder(orders.get(selected));
}

function renderList() {
  const body = document.querySelector("#orders tbody");
  const sorted = [...orders.values()].sort((a, b) => (a.order_id < b.order_id ? 1 : -1)).slice(0, 50);
  body.replaceChildren(
    ...sorted.map((o) => {
      const row = el(
        "tr",
        { "data-order-id": o.order_id, "data-status": o.status, class: o.order_id === selected ? "selected" : "" },
        el("td", {}, el("code", { textContent: shortId(o.order_id), title: o.order_id })),
        el("td", { textContent: o.customer_id }),
        el("td", {}, el("span", { class: `status ${o.status}`, textContent: o.status })),
        el("td", { class: "number", textContent: money(o.total_minor, o.currency) }),
        el("td", { textContent: time(o.updated_at) }),
      );
      row.addEventListener("click", () => select(o.order_id));
      return row;
    }),
  );
  document.getElementById("no-orders").hidden = orders.size > 0;
}

async function loadList() {
  const response = await api("/orders?limit=50");
  if (!response.ok) return;
  for (const order of (await response.json()).orders) upsert(order);
}

// --- one order --------------------------------------------------------------------------

async function select(orderId) {
  if (selected !== orderId) document.getElementById("cancel-result").textContent = "";
  selected = orderId;
  renderList();
  const response = await api(`/orders/${orderId}`);
  if (response.ok) upsert(await response.json());
}

function renderOrder(order) {
  document.getElementById("no-selection").hidden = true;
  const article = document.getElementById("order");
  article.hidden = false;
  article.dataset.orderId = order.order_id;
  article.dataset.status = order.status;
  document.getElementById("order-id").textContent = order.order_id;
  const status = document.getElementById("order-status");
  status.textContent = order.status;
  status.className = `status ${order.status}`;
  document.getElementById("order-summary").textContent =
    `${order.customer_id} · ${money(order.total_minor, order.currency)} · placed ${time(order.placed_at)}`;
  document.getElementById("order-reason").textContent = order.outcome_reason || "";
  document.getElementById("cancel-button").disabled = TERMINAL.has(order.status);
  const byId = new Map(order.timeline.map((step) => [step.event_id, step]));
  document.getElementById("timeline").replaceChildren(
    ...order.timeline.map((step) => {
      const cause = byId.get(step.causation_id);
      return el(
        "li",
        { class: `step ${step.kind}`, "data-kind": step.kind, "data-event-type": step.event_type },
        el("time", { textContent: preciseTime(step.at), dateTime: step.at }),
        el("span", { class: `service ${step.service}`, textContent: step.service.replace("-service", "") }),
        el("strong", { textContent: step.event_type }),
        step.kind === "compensation" ? el("span", { class: "kind compensation", textContent: "compensation" }) : "",
        el("span", { class: "detail", textContent: step.detail }),
        el("span", {
          class: "cause",
          textContent: cause ? `after ${cause.event_type}` : step.causation_id ? `after ${shortId(step.causation_id)}` : "",
          title: step.causation_id || "",
        }),
      );
    }),
  );
}

async function cancelSelected() {
  const result = document.getElementById("cancel-result");
  const response = await api(`/orders/${selected}/cancel`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ reason: "cancelled from the console" }),
  });
  result.textContent = response.ok ? "Cancellation requested." : await problemText(response);
}

// --- placing ----------------------------------------------------------------------------

function idempotencyKey() {
  // crypto.randomUUID needs a secure context; getRandomValues does not.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function place(event) {
  event.preventDefault();
  const value = (id) => document.getElementById(id).value.trim();
  const country = value("place-country").toUpperCase();
  const body = {
    customer_id: value("place-customer"),
    currency: "EUR",
    items: [{ product_id: value("place-product"), quantity: Number(value("place-quantity")) }],
    shipping_address: { recipient: value("place-customer"), line1: "1 Console Way", city: "Berlin", postal_code: "10115", country },
  };
  const result = document.getElementById("place-result");
  const response = await api("/orders", {
    method: "POST",
    headers: { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey() },
    body: JSON.stringify(body),
  });
  if (!response.ok) {
    result.textContent = await problemText(response);
    return;
  }
  const { order_id } = await response.json();
  result.textContent = `Placed ${order_id}.`;
  result.dataset.orderId = order_id;
  await select(order_id);
}

// --- the live stream --------------------------------------------------------------------

function renderCounters(counters) {
  document.getElementById("count-placed").textContent = counters.placed;
  document.getElementById("count-completed").textContent = counters.completed;
  document.getElementById("count-cancelled").textContent = counters.cancelled;
  const young = Date.now() - new Date(counters.since).getTime() < 59000;
  document.getElementById("count-since").textContent = young ? `since ${time(counters.since)}` : "last minute";
}

function setConnection(state, text) {
  const connection = document.getElementById("connection");
  connection.dataset.state = state;
  connection.textContent = text;
}

// Server-sent events over fetch, so that the token goes in a header, not in the URL.
async function follow() {
  while (token) {
    try {
      const response = await api("/orders/live", { headers: { Accept: "text/event-stream" } });
      if (!response.ok) throw new Error(await problemText(response));
      setConnection("live", "live");
      await loadList(); // after subscribing, so that nothing falls between list and stream
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          dispatch(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (!token) return;
      console.warn("live stream", error);
    }
    setConnection("offline", "reconnecting…");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function dispatch(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (name === "order") upsert(JSON.parse(data.join("\n")));
  else if (name === "counters") renderCounters(JSON.parse(data.join("\n")));
  else if (name === "resync") loadList();
}

// --- start ------------------------------------------------------------------------------

function start() {
  document.getElementById("sign-in").hidden = true;
  document.getElementById("console").hidden = false;
  follow();
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token-input").value.trim();
  sessionStorage.setItem("orderflow-token", token);
  start();
});
document.getElementById("place-form").addEventListener("submit", place);
document.getElementById("cancel-button").addEventListener("click", cancelSelected);

token = loadToken();
if (token) start();
else showSignIn();

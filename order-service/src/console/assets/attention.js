// The console's "Needs attention" view: the stuck sagas with their evidence, the dead
// letters grouped by cause with their reason and record, and the operator's actions
// (redrive, nudge, cancel, acknowledge), each confirmed with a reason. Refreshed every few seconds; shares app.js's
// helpers (api, el, select, problemText, shortId, time).
"use strict";

const ATTENTION_REFRESH_MS = 3000;
let pendingAction = null; // { action, path, body }
const openRecords = new Set(); // the dead letters whose record the operator opened, by place

async function refreshAttention() {
  if (!token) return;
  try {
    const [stuck, letters] = await Promise.all([api("/sagas/stuck"), api("/sagas/dead-letters")]);
    if (!stuck.ok || !letters.ok) {
      const failed = stuck.ok ? letters : stuck;
      document.getElementById("attention-unavailable").textContent = await problemText(failed);
      return;
    }
    const listing = await stuck.json();
    const deadLetters = await letters.json();
    renderStuck(listing);
    renderDeadLetters(deadLetters);
    const count = listing.sagas.length + deadLetters.letters;
    document.getElementById("attention-count").textContent = count;
    document.getElementById("attention-empty").hidden = count > 0;
    document.getElementById("attention-unavailable").textContent = [
      ...listing.evidence_unavailable,
      ...deadLetters.unavailable,
    ].join("; ");
  } catch (error) {
    console.warn("needs attention", error);
  }
}

// What the owing consumer said with its commit on the partition.
const heldBack = (held) =>
  held.state === "paused"
    ? `paused by its consumer until ${time(held.until)}: ${held.reason}`
    : `stalled since ${time(held.since)}; its group was rejoined`;

const lagOf = (saga) =>
  saga.awaiting.flatMap((step) => step.partitions).reduce((sum, p) => sum + p.lag, 0);

function renderStuck(listing) {
  document.getElementById("stuck-after").textContent = listing.stuck_after_secs;
  document.getElementById("stuck-block").hidden = listing.sagas.length === 0;
  document.querySelector("#stuck tbody").replaceChildren(
    ...listing.sagas.map((saga) => {
      const owing = saga.awaiting.map((step) => step.service).join(", ");
      const waits = saga.unreadable
        ? el("span", { class: "warning", textContent: `history unreadable: ${saga.unreadable}` })
        : el(
            "span",
            {},
            ...saga.awaiting.map((step) =>
              el("div", {}, el("strong", { textContent: step.service }), ` ${step.events.join(" or ")}`),
            ),
          );
      const evidence = el(
        "span",
        {},
        ...saga.awaiting.flatMap((step) =>
          step.partitions.map((p) =>
            el(
              "div",
              {
                class: p.lag > 0 ? "behind" : "",
                textContent: `${p.topic} [${p.partition}]: lag ${p.lag} (committed ${p.committed ?? "none"}, end ${p.end})`,
              },
              p.held_back ? el("div", { class: "warning held-back", textContent: heldBack(p.held_back) }) : "",
            ),
          ),
        ),
        saga.dead_letters.length
          ? el("div", { class: "warning", textContent: `${saga.dead_letters.length} dead letter(s)` })
          : "",
      );
      const row = el(
        "tr",
        {
          "data-order-id": saga.order_id,
          "data-status": saga.status,
          "data-service": owing,
          "data-lag": lagOf(saga),
          "data-dead-letters": saga.dead_letters.length,
        },
        el("td", {}, el("code", { textContent: shortId(saga.order_id), title: saga.order_id })),
        el("td", {}, el("span", { class: `status ${saga.status}`, textContent: saga.status })),
        el("td", { class: "number", textContent: `${saga.idle_secs} s` }),
        el("td", {}, waits),
        el("td", { class: "evidence" }, evidence),
        el("td", { class: "actions" }, ...actionButtons(saga)),
      );
      row.addEventListener("click", (event) => {
        if (event.target.tagName !== "BUTTON") select(saga.order_id);
      });
      return row;
    }),
  );
}

// A button that asks to confirm `action` (a POST of `body` and a reason to `path`).
function actionButton(action, label, question, path, body = {}, disabled = false) {
  const node = el("button", { type: "button", class: `action ${action}`, textContent: label, disabled });
  node.dataset.action = action;
  node.addEventListener("click", () => ask(action, path, body, question));
  return node;
}

function actionButtons(saga) {
  const id = shortId(saga.order_id);
  const button = (action, label, disabled, question, body = {}) =>
    actionButton(action, label, question, `/sagas/${saga.order_id}/${action}`, body, disabled);
  return [
    button(
      "redrive",
      "Redrive",
      saga.dead_letters.length === 0,
      `Send the ${saga.dead_letters.length} dead letter(s) of order ${id} back to their topics? Do it once their cause is fixed; consumers that already have a record skip it.`,
    ),
    button(
      "nudge",
      "Nudge",
      Boolean(saga.unreadable),
      `Publish the latest event of order ${id} again, under its own id? Consumers that already have it skip it.`,
    ),
    button(
      "cancel",
      "Cancel",
      saga.status === "CANCELLING" || Boolean(saga.unreadable),
      `Cancel order ${id} now? Every completed step is compensated; this cannot be undone.`,
    ),
  ];
}

// The dead letters that need an operator, a group per cause (where, by whom, why): a group
// can be acknowledged as a whole, each letter on its own, or redriven where it can be (else
// the letter says why it cannot). A group's letters are listed under it, opened at first
// when there are few.
const openGroups = new Map(); // whether the operator opened or closed a group, by cause

const causeKey = (cause) => JSON.stringify([cause.topic, cause.consumer_group, cause.error_class, cause.fingerprint]);

function renderDeadLetters(list) {
  document.getElementById("dead-letters-block").hidden = list.groups.length === 0;
  document.getElementById("dead-letter-count").textContent = list.letters;
  document.querySelector("#dead-letters tbody").replaceChildren(
    ...list.groups.flatMap((group) => {
      const key = causeKey(group.cause);
      const { topic, consumer_group: by, error_class: errorClass, fingerprint } = group.cause;
      const acknowledge = actionButton(
        "acknowledge",
        "Acknowledge all",
        `Acknowledge the ${group.count} dead letter(s) of ${topic} set aside by ${by} (${errorClass})? They leave this view; letters of this cause that come later show again.`,
        "/sagas/dead-letters/acknowledge",
        { cause: group.cause },
      );
      const orders = group.orders.map((id) => el("code", { textContent: shortId(id), title: id }));
      const head = el(
        "tr",
        { class: "group", "data-cause": key, "data-count": group.count, "data-topic": topic, "data-class": errorClass || "" },
        el("td", { class: "number" }, el("strong", { textContent: group.count })),
        el("td", { class: "reason" }, el("strong", { textContent: errorClass || "" }), ` ${fingerprint}`),
        el("td", {}, el("code", { textContent: topic }), el("div", { class: "muted", textContent: by || "" })),
        el("td", { textContent: group.last_seen ? `${time(group.first_seen)} – ${time(group.last_seen)}` : "" }),
        el("td", { class: "orders" }, ...(orders.length ? orders : [el("span", { class: "muted", textContent: "none" })])),
        el("td", { class: "actions" }, acknowledge),
      );
      const letters = el(
        "details",
        { open: openGroups.get(key) ?? group.count <= 5 },
        el("summary", { textContent: `${group.letters.length < group.count ? `the newest ${group.letters.length} of ` : ""}${group.count} letter(s)` }),
        el("table", { class: "letters" }, el("tbody", {}, ...group.letters.map(letterRow))),
      );
      letters.addEventListener("toggle", () => openGroups.set(key, letters.open));
      return [head, el("tr", { class: "group-letters", "data-cause": key }, el("td", { colSpan: 6 }, letters))];
    }),
  );
}

function letterRow(letter) {
  const place = `${letter.topic}/${letter.partition}/${letter.offset}`;
  const where = { topic: letter.topic, partition: letter.partition, offset: letter.offset };
  // The list is rebuilt on each refresh: a record the operator opened stays open.
  const record = letter.record
    ? el(
        "details",
        { open: openRecords.has(place) },
        el("summary", { textContent: letter.event_type || "record" }),
        el("pre", { textContent: JSON.stringify(letter.record, null, 2) }),
      )
    : el("span", {
        class: "muted",
        // Often the very reason it was set aside: then it is not said twice.
        textContent: letter.undecodable === letter.reason ? "not decoded" : `not decoded: ${letter.undecodable}`,
      });
  if (letter.record) {
    record.addEventListener("toggle", () => (record.open ? openRecords.add(place) : openRecords.delete(place)));
  }
  const label = `${letter.topic} [${letter.partition}] @${letter.offset}`;
  const redrive = letter.not_redrivable
    ? el("span", { class: "not-redrivable muted", textContent: `cannot be redriven: ${letter.not_redrivable}` })
    : actionButton(
        "redrive",
        "Redrive",
        `Send ${label} back to its topic? Do it once its cause is fixed.`,
        `/sagas/${letter.order_id}/redrive`,
        { dead_letters: [where] },
      );
  const acknowledge = actionButton(
    "acknowledge",
    "Acknowledge",
    `Acknowledge ${label} as handled? It leaves this view.`,
    "/sagas/dead-letters/acknowledge",
    { dead_letters: [where] },
  );
  return el(
    "tr",
    {
      "data-order-id": letter.order_id || "",
      "data-topic": letter.topic,
      "data-partition": letter.partition,
      "data-offset": letter.offset,
    },
    el("td", { textContent: letter.dead_lettered_at ? time(letter.dead_lettered_at) : "" }),
    el("td", {}, el("code", { textContent: `[${letter.partition}] @${letter.offset}`, title: label })),
    el("td", {}, letter.order_id ? el("code", { textContent: shortId(letter.order_id), title: letter.order_id }) : ""),
    el("td", { class: "reason", textContent: letter.reason || "" }),
    el("td", { class: "record" }, record),
    el("td", { class: "actions" }, redrive, acknowledge),
  );
}

// --- confirming an action ----------------------------------------------------------------

function ask(action, path, body, question) {
  pendingAction = { action, path, body };
  const form = document.getElementById("confirm-action");
  form.dataset.action = action;
  document.getElementById("confirm-question").textContent = question;
  document.getElementById("confirm-button").textContent = `Confirm ${action}`;
  document.getElementById("action-result").textContent = "";
  form.hidden = false;
  document.getElementById("confirm-reason").focus();
}

function dismiss() {
  pendingAction = null;
  document.getElementById("confirm-action").hidden = true;
  document.getElementById("confirm-reason").value = "";
}

async function confirmAction(event) {
  event.preventDefault();
  if (!pendingAction) return;
  const { action, path, body } = pendingAction;
  const reason = document.getElementById("confirm-reason").value.trim();
  const response = await api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...body, reason }),
  });
  const result = document.getElementById("action-result");
  if (response.ok) {
    const done = await response.json();
    result.textContent = done.order_id
      ? `${action} of ${shortId(done.order_id)} accepted: ${done.event_type} ${shortId(done.event_id)}.`
      : `${done.acknowledged} dead letter(s) acknowledged.`;
    result.dataset.outcome = "accepted";
    dismiss();
    await refreshAttention();
  } else {
    result.textContent = await problemText(response);
    result.dataset.outcome = "refused";
  }
}

document.getElementById("confirm-action").addEventListener("submit", confirmAction);
document.getElementById("confirm-back").addEventListener("click", dismiss);
setInterval(refreshAttention, ATTENTION_REFRESH_MS);
refreshAttention();

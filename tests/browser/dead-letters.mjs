// Drives the console's dead letters in headless Chromium, as an operator works through a
// run of poison records: tests/tests/console.rs sends 30 records of three kinds to the
// catalog topic and answers "poisoned" on stdin; the page must show them as three groups
// of 10, each letter saying why it cannot be redriven (no Redrive button); one group is
// acknowledged from the page and leaves the view while the other two stay. Reports each
// step on stdout; fails (non-zero exit) on the first that does not happen in time.
//
// Usage: node dead-letters.mjs <order-service URL> <operator token> <customer> <product> <screenshot.png>
import { confirmAction, openConsole, say, until, waitForGo } from "./steps.mjs";

const [baseUrl, token, , , screenshot] = process.argv.slice(2);
const GROUPS = '#dead-letters tr.group[data-topic$="catalog.dlq"]';
const LETTERS = '#dead-letters table.letters tr[data-topic$="catalog.dlq"]';

const { browser, page } = await openConsole(baseUrl, token);
try {
  say("live");
  await waitForGo("poisoned");

  // Three causes, ten letters each: one line per cause, not thirty.
  await until(
    page,
    (selector) => {
      const groups = [...document.querySelectorAll(selector)];
      return groups.length === 3 && groups.every((group) => group.dataset.count === "10");
    },
    GROUPS,
  );
  const classes = await page.$$eval(GROUPS, (groups) => groups.map((group) => group.dataset.class).sort());
  if (classes.join() !== "malformed_avro,not_wire_format,unknown_schema_id") {
    throw new Error(`the groups are of ${classes.join()}`);
  }
  // None of them can be redriven, and each letter says why instead of offering to.
  const letters = await page.$$eval(LETTERS, (rows) =>
    rows.map((row) => ({
      redrive: Boolean(row.querySelector('button[data-action="redrive"]')),
      why: row.querySelector(".not-redrivable")?.textContent ?? "",
    })),
  );
  if (letters.length !== 30 || letters.some((letter) => letter.redrive || !letter.why.startsWith("cannot be redriven"))) {
    throw new Error(`the letters do not say why they cannot be redriven: ${JSON.stringify(letters.slice(0, 3))}`);
  }
  say("grouped", classes.join(","));

  // The picture for the docs: the garbage group opened.
  await page.click(`${GROUPS}[data-class="not_wire_format"] + tr.group-letters summary`);
  await page.locator("#attention-panel").screenshot({ path: screenshot });

  // Acknowledged as a whole, the unknown schema ids leave the view; the others stay.
  const done = await confirmAction(
    page,
    `${GROUPS}[data-class="unknown_schema_id"] button[data-action="acknowledge"]`,
    "records from a retired producer; nothing to replay",
  );
  if (done.outcome !== "accepted" || !done.text.startsWith("10 dead letter(s) acknowledged")) {
    throw new Error(`the acknowledgement was not accepted: ${done.text}`);
  }
  await until(
    page,
    (selector) => {
      const left = [...document.querySelectorAll(selector)].map((group) => group.dataset.class).sort();
      return left.join() === "malformed_avro,not_wire_format";
    },
    GROUPS,
  );
  say("acknowledged", "unknown_schema_id");
} finally {
  await browser.close();
}
process.exit(0);

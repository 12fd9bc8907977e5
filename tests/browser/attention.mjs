// Drives the console's "Needs attention" view in headless Chromium, as an operator would,
// and reports each step on stdout; tests/tests/console.rs runs it against a running stack
// (whose stuck threshold is a few seconds) and answers on stdin once it has stopped or
// restarted a service, or broken or repaired an order's history. Fails (non-zero exit) on
// the first step that does not happen in time.
//
// Usage: node attention.mjs <order-service URL> <operator token> <customer> <product> <screenshot.png>
import { confirmAction, openConsole, placeOrder, rowReaches, say, until, waitForGo } from "./steps.mjs";

const [baseUrl, token, customer, product, screenshot] = process.argv.slice(2);

const act = (page, orderId, action, reason) =>
  confirmAction(page, `#stuck tr[data-order-id="${orderId}"] button[data-action="${action}"]`, reason);

const { browser, page } = await openConsole(baseUrl, token);
try {
  say("live");

  // Without inventory, an order waits after payment: listed as stuck on inventory-service,
  // with the payment it has not read as lag; once inventory is back it leaves the list.
  await waitForGo("inventory-stopped");
  const held = await placeOrder(page, customer, product);
  await until(
    page,
    (id) => {
      const row = document.querySelector(`#stuck tr[data-order-id="${id}"]`);
      return row && row.dataset.service === "inventory-service" && Number(row.dataset.lag) >= 1;
    },
    held,
  );
  say("stuck", held);
  await waitForGo("inventory-started");
  await rowReaches(page, held, "COMPLETED");
  await until(page, (id) => !document.querySelector(`#stuck tr[data-order-id="${id}"]`), held);
  say("moved", held);

  // An order whose history order-service cannot read (the test breaks it) has its payment,
  // stock and shipment dead-lettered, each with the reason.
  await waitForGo("billing-stopped");
  const poisoned = await placeOrder(page, customer, product);
  say("placed", poisoned);
  await waitForGo("poisoned");
  await until(
    page,
    (id) => {
      const letters = [...document.querySelectorAll(`#dead-letters tr[data-order-id="${id}"]`)];
      const row = document.querySelector(`#stuck tr[data-order-id="${id}"]`);
      return (
        letters.length === 3 &&
        letters.every((letter) => letter.querySelector(".reason").textContent.includes("corrupt history")) &&
        row && Number(row.dataset.deadLetters) === 3
      );
    },
    poisoned,
  );
  const decoded = await page.locator(`#dead-letters tr[data-order-id="${poisoned}"] details pre`).count();
  if (decoded !== 3) throw new Error(`${decoded} of the 3 dead letters show their record decoded`);
  // The picture for the README: the payment's record opened.
  await page.click(`#dead-letters tr[data-order-id="${poisoned}"][data-topic$="payments.dlq"] summary`);
  // Opened, it stays open across the refreshes.
  await page.waitForTimeout(3500);
  const open = await page.locator(`#dead-letters tr[data-order-id="${poisoned}"] details[open]`).count();
  if (open !== 1) throw new Error(`${open} records open after a refresh, not the 1 opened`);
  await page.locator("#attention-panel").screenshot({ path: screenshot });
  say("dead-lettered", poisoned);

  // A redrive before the cause is fixed is refused, with why.
  const early = await act(page, poisoned, "redrive", "trying before the repair");
  if (early.outcome !== "refused" || !early.text.includes("cannot be read")) {
    throw new Error(`a redrive of an unreadable order was not refused: ${JSON.stringify(early)}`);
  }
  say("refused", poisoned);

  // Repaired, redriven from the console: the order completes.
  await waitForGo("repaired");
  const redrive = await act(page, poisoned, "redrive", "the history is repaired");
  if (redrive.outcome !== "accepted") throw new Error(`the redrive was refused: ${redrive.text}`);
  await rowReaches(page, poisoned, "COMPLETED");
  await until(page, (id) => !document.querySelector(`#stuck tr[data-order-id="${id}"]`), poisoned);
  say("redriven", poisoned);
} finally {
  await browser.close();
}
process.exit(0);

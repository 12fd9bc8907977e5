// Drives the web console in headless Chromium, as a person would, and reports each step on
// stdout; tests/tests/console.rs runs it against a running stack and answers on stdin when
// it has stopped or restarted a service. Fails (non-zero exit) on the first step that does
// not happen in time.
//
// Usage: node console.mjs <order-service URL> <operator token> <customer> <product> <screenshot.png>
import { STEP_TIMEOUT_MS, openConsole, placeOrder, rowReaches, say, waitForGo } from "./steps.mjs";

const [baseUrl, token, customer, product, screenshot] = process.argv.slice(2);

const { browser, page } = await openConsole(baseUrl, token);
try {
  let loads = 0;
  page.on("load", () => loads++);
  say("live");

  // An order placed from the page reaches COMPLETED, with no reload.
  const completed = await placeOrder(page, customer, product);
  await rowReaches(page, completed, "COMPLETED");
  await page.click(`#orders tr[data-order-id="${completed}"]`);
  await page.waitForSelector(`#order[data-order-id="${completed}"] #timeline li[data-event-type="OrderCompleted"]`, {
    timeout: STEP_TIMEOUT_MS,
  });
  for (const service of ["order", "billing", "inventory", "shipping"]) {
    const steps = await page.locator(`#timeline li .service.${service}-service`).count();
    if (steps === 0) throw new Error(`the timeline shows no step of ${service}-service`);
  }
  say("completed", completed);

  // A second order, held after payment (the test stops inventory-service), is cancelled
  // from the page; once inventory is back, the refund appears, marked as a compensation.
  await waitForGo("inventory-stopped");
  const cancelled = await placeOrder(page, customer, product);
  await rowReaches(page, cancelled, "PAYMENT_AUTHORIZED");
  await page.waitForSelector(`#order[data-order-id="${cancelled}"]`, { timeout: STEP_TIMEOUT_MS });
  await page.click("#cancel-button");
  await page.waitForFunction(() => document.querySelector("#cancel-result").textContent === "Cancellation requested.", null, {
    timeout: STEP_TIMEOUT_MS,
  });
  await rowReaches(page, cancelled, "CANCELLING");
  say("cancelling", cancelled);
  await waitForGo("inventory-started");
  await rowReaches(page, cancelled, "CANCELLED");
  const refund = `#order[data-order-id="${cancelled}"] #timeline li[data-kind="compensation"][data-event-type="PaymentRefunded"]`;
  await page.waitForSelector(refund, { timeout: STEP_TIMEOUT_MS });
  // The last minute's counters follow within a second.
  await page.waitForFunction(
    () => ["#count-completed", "#count-cancelled"].every((id) => Number(document.querySelector(id).textContent) >= 1),
    null,
    { timeout: STEP_TIMEOUT_MS },
  );
  if (loads !== 0) throw new Error(`the page reloaded ${loads} time(s)`);
  say("compensated", cancelled);
  await page.screenshot({ path: screenshot, fullPage: true });
  say("screenshot", screenshot);
} finally {
  await browser.close();
}
process.exit(0);

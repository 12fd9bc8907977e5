// What the browser scripts share: reporting steps on stdout, waiting for the test's answer
// on stdin, launching Chromium, and placing an order from the console's form.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

export const STEP_TIMEOUT_MS = 60_000;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

export function say(step, detail = "") {
  console.log(`${step} ${detail}`.trim());
}

export async function waitForGo(expected) {
  const { value } = await lines.next();
  if (value?.trim() !== expected) throw new Error(`expected "${expected}" on stdin, got "${value}"`);
}

// Opens the console with the operator's token and waits until its live stream is on.
export async function openConsole(baseUrl, token) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.on("pageerror", (error) => say("page-error", error.message));
  await page.goto(`${baseUrl}/console#token=${token}`);
  await page.waitForSelector('#connection[data-state="live"]', { timeout: STEP_TIMEOUT_MS });
  return { browser, page };
}

// Places an order of one unit of `product` for `customer` from the page; returns its id.
export async function placeOrder(page, customer, product) {
  await page.fill("#place-customer", customer);
  await page.fill("#place-product", product);
  await page.fill("#place-quantity", "1");
  await page.fill("#place-country", "DE");
  const previous = await page.getAttribute("#place-result", "data-order-id");
  await page.click("#place-form button[type=submit]");
  await page.waitForFunction(
    (previous) => {
      const id = document.querySelector("#place-result").dataset.orderId;
      return id && id !== previous;
    },
    previous,
    { timeout: STEP_TIMEOUT_MS },
  );
  return page.getAttribute("#place-result", "data-order-id");
}

export async function rowReaches(page, orderId, status) {
  await page.waitForSelector(`#orders tr[data-order-id="${orderId}"][data-status="${status}"]`, {
    timeout: STEP_TIMEOUT_MS,
  });
}

export const until = (page, predicate, argument) =>
  page.waitForFunction(predicate, argument, { timeout: STEP_TIMEOUT_MS });

// Clicks the action button `selector`, confirms it with `reason`, and returns the outcome
// ("accepted" or "refused") and the text the console shows.
export async function confirmAction(page, selector, reason) {
  const action = await page.getAttribute(selector, "data-action");
  await page.click(selector);
  await page.waitForSelector(`#confirm-action[data-action="${action}"]:not([hidden])`, { timeout: STEP_TIMEOUT_MS });
  await page.fill("#confirm-reason", reason);
  await page.evaluate(() => delete document.querySelector("#action-result").dataset.outcome);
  await page.click("#confirm-button");
  await until(page, () => document.querySelector("#action-result").dataset.outcome);
  return page.evaluate(() => ({
    outcome: document.querySelector("#action-result").dataset.outcome,
    text: document.querySelector("#action-result").textContent,
  }));
}

// scripts/console-test.cjs — the web console and the API explorer in a real browser: Debian's
// Chromium, headless, driven by playwright-core (no browser download). Run by
// scripts/console-test.sh against a fresh server, worker and database; see there.
//
// Environment: TALLY_URL (http://127.0.0.1:PORT), MAIL_DIR (the worker's .eml files),
// TALLY_BIN and DATABASE_URL (for `tally admin`), CHROMIUM (the browser), PLAYWRIGHT_CORE (the
// package's directory), SCREENS_DIR (where the screenshots go).
"use strict";

const fs = require("node:fs");
const path = require("node:path");
const { execFileSync } = require("node:child_process");
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const URL_BASE = process.env.TALLY_URL;
const MAIL_DIR = process.env.MAIL_DIR;
const SCREENS = process.env.SCREENS_DIR;
const PASSWORD = "correct horse battery staple";
const RUN = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e4)}`;

let failures = 0;
let passes = 0;
const problems = [];

function log(text) {
  process.stderr.write(`console-test: ${text}\n`);
}

async function check(name, body) {
  const started = Date.now();
  try {
    await body();
    passes += 1;
    log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    failures += 1;
    log(`FAIL ${name}: ${error.stack || error}`);
    // What every open page showed when it failed.
    for (const [label, page] of openPages) {
      if (page.isClosed()) continue;
      await page
        .screenshot({ path: path.join(SCREENS, `FAILED-${passes + failures}-${label}.png`), fullPage: true })
        .catch(() => {});
    }
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// Every page records what its console and its scripts said. API refusals that a screen shows
// on purpose appear as "Failed to load resource: ... status of 4xx" lines: those are expected;
// anything else at level error (a CSP violation, an exception, a 5xx) fails the run.
function watch(page, label) {
  page.on("console", (message) => {
    if (message.type() !== "error" && message.type() !== "warning") return;
    const text = message.text();
    if (/Failed to load resource: the server responded with a status of 4\d\d/.test(text)) return;
    // The answer the test cuts on purpose (the retry check).
    if (cutting && /net::ERR_CONNECTION_RESET/.test(text)) return;
    if (message.type() === "warning" && !/Content.Security.Policy|Refused/i.test(text)) return;
    problems.push(`${label}: console ${message.type()}: ${text}`);
  });
  page.on("pageerror", (error) => problems.push(`${label}: page error: ${error.message}`));
  return page;
}

async function browserUser(browser, label, viewport = { width: 1100, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = watch(await context.newPage(), label);
  openPages.push([label, page]);
  page.on("request", (request) => {
    urls.push(request.url());
    if (request.url().endsWith("/v1/sessions:refresh")) refreshes += 1;
  });
  page.on("response", async (response) => {
    if (!/\/v1\/sessions(:refresh)?$/.test(response.url()) || response.request().method() !== "POST") return;
    const body = await response.json().catch(() => null);
    for (const t of [body?.accessToken, body?.refreshToken]) if (t) tokens.add(t);
  });
  return { context, page };
}

async function shot(page, name) {
  fs.mkdirSync(SCREENS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENS, `${name}.png`), fullPage: true });
}

async function api(method, route, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(URL_BASE + route, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function apiLogin(username) {
  return (await api("POST", "/v1/sessions", { username, password: PASSWORD })).accessToken;
}

function tally(args, input) {
  return execFileSync(process.env.TALLY_BIN, args, { input, env: process.env, stdio: ["pipe", "pipe", "pipe"] }).toString();
}

// The link in the verification mail the worker wrote for `email`, decoded from the .eml.
async function mailedLink(email) {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    for (const name of fs.existsSync(MAIL_DIR) ? fs.readdirSync(MAIL_DIR) : []) {
      if (!name.endsWith(".eml")) continue;
      const raw = fs.readFileSync(path.join(MAIL_DIR, name), "utf8");
      if (!raw.includes(email)) continue;
      // Quoted-printable soft breaks and escapes, then any base64 part.
      const texts = [raw.replace(/=\r?\n/g, "").replace(/=3D/gi, "=")];
      for (const block of raw.split(/\r?\n\r?\n/)) {
        if (/^[A-Za-z0-9+/=\r\n]+$/.test(block.trim()) && block.trim().length > 40) {
          texts.push(Buffer.from(block.replace(/\s+/g, ""), "base64").toString("utf8"));
        }
      }
      for (const text of texts) {
        const match = /(https?:\/\/[^\s"<>]+verification_?[iI]d=[^\s"<>]+)/.exec(text);
        if (match) return { link: match[1].replace(/&amp;/g, "&"), file: name };
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`no mail for ${email} in ${MAIL_DIR} within 60 s`);
}

async function signUp(page, username, fullName) {
  await page.goto(`${URL_BASE}/console#/signup`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Full name").fill(fullName);
  await page.getByLabel("Email").fill(`${username}@example.com`);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create user" }).click();
  await page.getByRole("heading", { name: "Check your mail" }).waitFor();
}

async function logIn(page, username) {
  await page.goto(`${URL_BASE}/console#/login`);
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Log in" }).click();
  await page.getByRole("heading", { name: /accounts/i }).waitFor();
}

async function openAccount(page, currency, name) {
  await visit(page, "#/accounts");
  await page.getByLabel("Currency").selectOption(currency);
  await page.getByLabel("Name").fill(name);
  await page.getByRole("button", { name: "Open account" }).click();
  await page.locator("#account-id").waitFor();
  return (await page.locator("#account-id").textContent()).trim();
}

// Opens a console screen afresh. (A reload would log the page out, tokens being in memory
// only, and going to the URL the page is at already renders nothing new: so by another route.)
async function visit(page, hash) {
  if (page.url().endsWith(`/console${hash}`)) {
    await page.goto(`${URL_BASE}/console${hash === "#/sessions" ? "#/send" : "#/sessions"}`);
  }
  await page.goto(`${URL_BASE}/console${hash}`);
}

async function send(page, fromId, toId, amount) {
  await visit(page, `#/send?from=${fromId}`);
  await page.getByLabel("To account id").fill(toId);
  await page.getByLabel("Amount").fill(amount);
}

async function transfersOf(token, accountId) {
  return (await api("GET", `/v1/accounts/${accountId}/transfers?pageSize=100`, null, token)).transfers;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  const alice = `alice_${RUN}`;
  const bob = `bob_${RUN}`;
  const banker = `banker_${RUN}`;
  const admin = `admin_${RUN}`;
  const a = await browserUser(browser, "alice");
  const b = await browserUser(browser, "bob", { width: 360, height: 780 });
  let aliceAccount;
  let bobAccount;

  await check("the log-in screen renders (time measured)", async () => {
    const started = Date.now();
    await a.page.goto(`${URL_BASE}/console`);
    await a.page.locator("#login-form").waitFor();
    const wall = Date.now() - started;
    const timing = await a.page.evaluate(() => {
      const ready = performance.getEntriesByName("console-ready")[0];
      const nav = performance.getEntriesByType("navigation")[0];
      return { ready: ready ? ready.startTime : null, domContentLoaded: nav.domContentLoadedEventEnd };
    });
    log(`FIGURE login screen: ready ${timing.ready?.toFixed(0)} ms after navigation start (DOMContentLoaded ${timing.domContentLoaded.toFixed(0)} ms; ${wall} ms wall clock including goto)`);
    await shot(a.page, "01-login");
  });

  await check("every console asset is hashed, immutable, and all of them are under 200 KB gzipped", async () => {
    const zlib = require("node:zlib");
    const html = await (await fetch(`${URL_BASE}/console`)).text();
    const scripts = [...html.matchAll(/(?:src|href)="(\/console\/assets\/[^"]+)"/g)].map((m) => m[1]);
    assert(scripts.length >= 3, `the page names only ${scripts}`);
    const seen = new Set();
    let raw = 0;
    let gzipped = 0;
    const queue = [...scripts];
    while (queue.length) {
      const asset = queue.shift();
      if (seen.has(asset)) continue;
      seen.add(asset);
      const response = await fetch(URL_BASE + asset);
      assert(response.ok, `${asset}: ${response.status}`);
      assert(/^\/console\/assets\/[a-z-]+\.[0-9a-f]{16}\.[a-z]+$/.test(asset), `${asset} has no content hash`);
      assert(response.headers.get("cache-control") === "public, max-age=31536000, immutable", `${asset}: ${response.headers.get("cache-control")}`);
      const body = Buffer.from(await response.arrayBuffer());
      raw += body.length;
      gzipped += zlib.gzipSync(body, { level: 9 }).length;
      for (const m of body.toString("utf8").matchAll(/from "\.\/([^"]+)"/g)) queue.push(`/console/assets/${m[1]}`);
    }
    log(`FIGURE console assets: ${seen.size} files, ${raw} bytes, ${gzipped} bytes gzipped (-9)`);
    assert(gzipped < 200 * 1024, `the console's assets are ${gzipped} bytes gzipped`);
  });

  await check("sign up two users; the mailed link verifies each", async () => {
    await signUp(a.page, alice, "Alice Example");
    assert((await a.page.locator("#check-mail").textContent()).includes(`${alice}@example.com`), "the check-your-mail screen names the address");
    assert((await a.page.textContent("main")).includes("TALLY_MAIL_DIR"), "in development it says where the .eml goes");
    await shot(a.page, "02-check-mail");
    await signUp(b.page, bob, "Bob <b>Example</b>");
    for (const [who, page] of [[alice, a.page], [bob, b.page]]) {
      const { link, file } = await mailedLink(`${who}@example.com`);
      log(`${who}: mailed link in ${file}: ${link.replace(/code=[^&]+/, "code=…")}`);
      await page.goto(link);
      await page.getByText(/is verified|"emailVerified":\s*true/).waitFor();
      if (who === alice) await shot(page, "03-verified");
    }
  });

  await check("bootstrap a banker and an admin with tally admin", async () => {
    for (const [name, role] of [[banker, "banker"], [admin, "admin"]]) {
      tally(["admin", "create-user", "--username", name, "--email", `${name}@example.com`], `${PASSWORD}\n`);
      tally(["admin", "grant-role", name, role]);
    }
  });

  await check("log in, open an account each (bob at 360 px wide)", async () => {
    await logIn(a.page, alice);
    aliceAccount = await openAccount(a.page, "USD", "Checking");
    await logIn(b.page, bob);
    bobAccount = await openAccount(b.page, "USD", "Savings");
    await shot(b.page, "04-account-360px");
    // A user-supplied string is shown as text, never parsed as HTML.
    assert((await b.page.locator("header .username").textContent()) === bob, "the username is shown");
    const width = await b.page.evaluate(() => document.documentElement.scrollWidth);
    assert(width <= 360, `at 360 px the page is ${width} px wide`);
  });

  await check("every screen reads at 360 px: nothing wider than the window", async () => {
    for (const hash of ["#/accounts", `#/account/${bobAccount}`, "#/send", "#/convert", "#/sessions"]) {
      await visit(b.page, hash);
      await b.page.locator("main h1").waitFor();
      await b.page.waitForLoadState("networkidle");
      const width = await b.page.evaluate(() => document.documentElement.scrollWidth);
      assert(width <= 360, `at 360 px ${hash} is ${width} px wide`);
    }
  });

  await check("the send form asks for a hold's length only for a hold", async () => {
    await visit(a.page, "#/send");
    const minutes = a.page.getByLabel("Hold for (minutes)");
    assert(!(await minutes.isVisible()), "the hold's minutes show without a hold");
    await a.page.getByLabel(/Only reserve/).check();
    assert(await minutes.isVisible(), "the hold's minutes do not show for a hold");
  });

  await check("a banker finds alice's account and deposits 100.00 USD", async () => {
    const k = await browserUser(browser, "banker");
    await logIn(k.page, banker);
    await k.page.getByLabel("Owner").first().fill(alice);
    await k.page.getByRole("button", { name: "Show" }).click();
    await k.page.getByRole("heading", { name: `Accounts of ${alice}` }).waitFor();
    await k.page.getByRole("link", { name: "Checking" }).click();
    await k.page.getByLabel("Operation").selectOption("deposit");
    await k.page.getByLabel(/Amount/).fill("100.00");
    await k.page.getByRole("button", { name: "Apply" }).click();
    await k.page.getByText("Deposited 100.00 USD.").waitFor();
    assert((await k.page.locator("#balance").textContent()) === "100.00 USD", "the balance shows the deposit");
    await shot(k.page, "05-banker-deposit");
    await k.context.close();
  });

  await check("alice sends 12.34 USD to bob; both statements show it with running balances", async () => {
    await send(a.page, aliceAccount, bobAccount, "12.34");
    await shot(a.page, "06-send");
    await a.page.getByRole("button", { name: "Send" }).click();
    await a.page.getByText("Sent 12.34 USD.").waitFor();
    await visit(a.page, `#/accounts/${aliceAccount}`);
    await a.page.locator("#statement table").waitFor();
    const aliceRow = await a.page.locator("#statement tbody tr").first().textContent();
    assert(aliceRow.includes("−12.34 USD") && aliceRow.includes("87.66 USD"), `alice's statement: ${aliceRow}`);
    await shot(a.page, "07-statement");
    await visit(b.page, `#/accounts/${bobAccount}`);
    await b.page.locator("#statement table").waitFor();
    const bobRow = await b.page.locator("#statement tbody tr").first().textContent();
    assert(bobRow.includes("12.34 USD") && !bobRow.includes("−"), `bob's statement: ${bobRow}`);
    assert((await b.page.locator("#balance").textContent()) === "12.34 USD", "bob's balance");
    // The transfer's detail, from the statement.
    await a.page.locator("#statement tbody tr a").first().click();
    await a.page.locator("#transfer").waitFor();
    assert((await a.page.locator("#transfer-status").textContent()) === "succeeded", "the detail says succeeded");
    await shot(a.page, "08-transfer");
  });

  await check("a double-submitted transfer pays once, and so does a retry after a lost answer", async () => {
    const token = await apiLogin(alice);
    await send(a.page, aliceAccount, bobAccount, "1.00");
    const button = a.page.getByRole("button", { name: "Send" });
    await button.dblclick();
    await a.page.getByText("Sent 1.00 USD.").waitFor();
    // Two submits in the same instant (Enter pressed twice, say).
    await send(a.page, aliceAccount, bobAccount, "3.00");
    await a.page.locator("#send-form").evaluate((f) => {
      f.requestSubmit();
      f.requestSubmit();
    });
    await a.page.getByText("Sent 3.00 USD.").waitFor();
    // The answer is lost on the way back: the server moved the money, the page saw an error.
    await send(a.page, aliceAccount, bobAccount, "2.00");
    let cut = false;
    cutting = true;
    await a.page.route("**/v1/transfers", async (route) => {
      if (cut) return route.continue();
      cut = true;
      await route.fetch();
      await route.abort("connectionreset");
    });
    await button.click();
    await a.page.getByText("could not be reached").waitFor();
    await button.click();
    await a.page.getByText("Sent 2.00 USD.").waitFor();
    await a.page.unroute("**/v1/transfers");
    cutting = false;
    const transfers = await transfersOf(token, aliceAccount);
    const ones = transfers.filter((t) => t.amount === "100" && t.kind === "TRANSFER_KIND_TRANSFER");
    const twos = transfers.filter((t) => t.amount === "200" && t.kind === "TRANSFER_KIND_TRANSFER");
    const threes = transfers.filter((t) => t.amount === "300" && t.kind === "TRANSFER_KIND_TRANSFER");
    assert(ones.length === 1, `1.00 USD was paid ${ones.length} times`);
    assert(threes.length === 1, `3.00 USD was paid ${threes.length} times`);
    assert(twos.length === 1, `2.00 USD was paid ${twos.length} times`);
  });

  await check("a bad amount: the client's check, then the server's own message", async () => {
    await send(a.page, aliceAccount, bobAccount, "1.234");
    await a.page.getByRole("button", { name: "Send" }).click();
    await a.page.getByText("USD has 2 decimal places at most.").waitFor();
    // Past the ledger's largest amount: only the server knows that bound.
    await a.page.getByLabel("Amount").fill("20000000000000.00");
    await a.page.getByRole("button", { name: "Send" }).click();
    const message = a.page.locator("#send-form .form-message.error");
    await message.waitFor();
    const text = await message.textContent();
    assert(/must be at most/.test(text), `the server's message is shown as it came: ${text}`);
    await shot(a.page, "09-server-error");
  });

  await check("a hold: reserve, then post it from the transfer's page", async () => {
    await send(a.page, aliceAccount, bobAccount, "5.00");
    await a.page.getByLabel(/Only reserve/).check();
    await a.page.getByRole("button", { name: "Send" }).click();
    await a.page.getByText("Held 5.00 USD.").waitFor();
    await a.page.locator("#send-result a").click();
    await a.page.locator("#post-hold").click();
    await a.page.locator("#transfer-status", { hasText: "posted" }).waitFor();
  });

  await check("the live statement follows a deposit made elsewhere", async () => {
    await visit(b.page, `#/accounts/${bobAccount}`);
    await b.page.locator("#watch").click();
    await b.page.locator('#live-status[data-live="true"]').waitFor();
    const bankerToken = await apiLogin(banker);
    await api("POST", `/v1/accounts/${bobAccount}:deposit`, { requestId: crypto.randomUUID(), amount: "700" }, bankerToken);
    await b.page.locator("#statement tbody tr").first().filter({ hasText: "7.00 USD" }).waitFor({ timeout: 10_000 });
    await shot(b.page, "10-live-statement");
    await b.page.locator("#watch").click();
  });

  await check("convert at a live rate", async () => {
    const bankerToken = await apiLogin(banker);
    await api("POST", "/v1/rates", { baseCurrency: "USD", quoteCurrency: "EUR", rate: "0.92", spreadBps: 50 }, bankerToken);
    const liquidity = (await api("GET", "/v1/liquidityAccounts", null, bankerToken)).accounts.find((l) => l.currency === "EUR");
    await api("POST", `/v1/accounts/${liquidity.accountId}:deposit`, { requestId: crypto.randomUUID(), amount: "1000000" }, bankerToken);
    await openAccount(a.page, "EUR", "Travel");
    await visit(a.page, `#/convert`);
    await a.page.locator("#rates table").waitFor();
    assert((await a.page.locator("#rates").textContent()).includes("USD/EUR"), "the live rates list USD/EUR");
    const optionOf = (name, text) => a.page.locator(`select[name=${name}] option`, { hasText: text }).getAttribute("value");
    await a.page.locator("select[name=from]").selectOption(await optionOf("from", "Checking"));
    await a.page.locator("select[name=to]").selectOption(await optionOf("to", "Travel"));
    await a.page.getByLabel("Amount to convert").fill("10.00");
    await a.page.getByRole("button", { name: "Get a quote" }).click();
    await a.page.locator("#convert").click();
    await a.page.getByText(/Converted 10.00 USD into/).waitFor();
    await shot(a.page, "11-convert");
  });

  await check("an admin grants and revokes a role", async () => {
    const m = await browserUser(browser, "admin");
    await logIn(m.page, admin);
    await m.page.getByRole("link", { name: "Roles" }).click();
    await m.page.getByLabel("Username").fill(bob);
    await m.page.getByLabel("Role", { exact: true }).selectOption("banker");
    await m.page.getByRole("button", { name: "Grant" }).click();
    await m.page.getByText(`${bob} now holds: banker, customer.`).waitFor();
    await shot(m.page, "12-roles");
    await m.page.getByRole("button", { name: "Revoke" }).click();
    await m.page.getByText(`${bob} now holds: customer.`).waitFor();
    await m.context.close();
  });

  await check("sessions: listed, and revoking one elsewhere sends that page back to log in", async () => {
    const other = await browserUser(browser, "alice-2");
    await logIn(other.page, alice);
    await visit(a.page, `#/sessions`);
    await a.page.locator("table").waitFor();
    await shot(a.page, "13-sessions");
    // Revoke the other page's session (the newest, first row) from here.
    await a.page.locator("button.revoke").first().click();
    await a.page.locator("button.revoke").first().waitFor();
    // The other page's next call finds its session gone (auth cache: at most its TTL late).
    const deadline = Date.now() + 15_000;
    for (;;) {
      await visit(other.page, `#/send`);
      await visit(other.page, `#/accounts`);
      if (await other.page.locator("#login-form").isVisible()) break;
      assert(Date.now() < deadline, "the revoked page still works after 15 s");
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    assert((await other.page.textContent("#flash")).includes("session has ended"), "it says why");
    await shot(other.page, "14-session-ended");
    await other.context.close();
  });

  await check("log out", async () => {
    await a.page.locator("#logout").click();
    await a.page.locator("#login-form").waitFor();
  });

  await check("the keyboard alone: Tab to the fields, type, Enter logs in", async () => {
    const k = await browserUser(browser, "keyboard");
    await k.page.goto(`${URL_BASE}/console#/login`);
    await k.page.locator("#login-form").waitFor();
    const focused = () => k.page.evaluate(() => document.activeElement?.labels?.[0]?.textContent ?? "");
    for (let i = 0; i < 20 && (await focused()) !== "Username"; i++) await k.page.keyboard.press("Tab");
    assert((await focused()) === "Username", "Tab never reached the username field");
    await k.page.keyboard.type(alice);
    await k.page.keyboard.press("Tab");
    assert((await focused()) === "Password", `Tab after the username went to ${JSON.stringify(await focused())}`);
    await k.page.keyboard.type(PASSWORD);
    await k.page.keyboard.press("Enter");
    await k.page.getByRole("heading", { name: /accounts/i }).waitFor();
    // The focus moved to the new screen; the next Tab is on one of its controls, outlined.
    assert(await k.page.evaluate(() => document.getElementById("main").contains(document.activeElement)),
      "after logging in the focus is not on the new screen");
    await k.page.keyboard.press("Tab");
    const outline = await k.page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert(outline !== "none", `the control Tab reached (${await k.page.evaluate(() => document.activeElement?.tagName)}) has no visible outline`);
    await k.context.close();
  });

  await check("the access token was refreshed (short TTL) without sending anyone back to log in", async () => {
    assert(refreshes > 0, "no POST /v1/sessions:refresh was seen");
    log(`FIGURE refreshes during the run: ${refreshes}`);
  });

  await check("the explorer: log in, paste the token, run GET /v1/accounts from the page", async () => {
    const token = await apiLogin(alice);
    const e = await browserUser(browser, "explorer");
    await e.page.goto(`${URL_BASE}/docs`);
    await e.page.locator(".swagger-ui .information-container").waitFor({ timeout: 30_000 });
    await e.page.getByRole("button", { name: /Authorize/ }).first().click();
    const dialog = e.page.locator(".modal-ux");
    await dialog.locator(".auth-container input").first().fill(token);
    await dialog.locator("button.authorize").click();
    await dialog.locator("button.btn-done").first().click();
    const op = e.page
      .locator(".opblock.opblock-get")
      .filter({ has: e.page.locator('.opblock-summary-path[data-path="/v1/accounts"]') })
      .first();
    await op.locator(".opblock-summary").click();
    const tryOut = op.getByRole("button", { name: "Try it out" });
    if (await tryOut.isVisible().catch(() => false)) await tryOut.click();
    await op.getByRole("button", { name: "Execute" }).click();
    const body = op.locator(".live-responses-table .response-col_description pre").first();
    await body.waitFor({ timeout: 15_000 });
    const text = await body.textContent();
    assert(text.includes(aliceAccount), `the answer lists alice's account: ${text.slice(0, 200)}`);
    await shot(e.page, "15-explorer");
    const stored = await e.page.evaluate(() => JSON.stringify(localStorage));
    assert(!stored.includes(token), "the explorer stored the token in localStorage");
    await e.context.close();
  });

  await check("no token in any URL, localStorage or sessionStorage", async () => {
    assert(tokens.size > 0, "no token was seen in any answer");
    const leaked = urls.find((u) => [...tokens].some((t) => u.includes(t) || u.includes(encodeURIComponent(t))));
    assert(!leaked, `a URL carried a token: ${leaked}`);
    for (const { page } of [a, b]) {
      const stored = await page.evaluate(() => JSON.stringify([localStorage, sessionStorage]));
      assert(stored === "[{},{}]", `storage: ${stored}`);
    }
  });

  await check("no console error, page error or CSP violation on any page", async () => {
    assert(problems.length === 0, `\n  ${problems.join("\n  ")}`);
  });

  await browser.close();
  process.stdout.write(`${passes} passed, ${failures} failed\n`);
  process.exit(failures ? 1 : 0);
}

// The pages open now (for screenshots of a failure), and whether a cut answer is expected.
const openPages = [];
let cutting = false;
// Every request any page made, and every token the server handed out: for the token checks.
const urls = [];
const tokens = new Set();
let refreshes = 0;

main().catch((error) => {
  log(`FAIL ${error.stack || error}`);
  process.stdout.write(`${passes} passed, ${failures + 1} failed\n`);
  process.exit(1);
});

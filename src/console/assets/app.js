// The tally console: screens over the public HTTP JSON API, routed by the URL's fragment
// (#/accounts, #/send, ...). The fragment never reaches the server, and no token is ever in it.

import * as api from "./api.js";
import {
  setCurrencies,
  currencies,
  formatAmount,
  parseAmount,
  checkUsername,
  checkPassword,
  checkFullName,
  checkEmail,
  checkUuid,
  formatTime,
  enumLabel,
} from "./format.js";
import { h, clear, field, option, form, showError, busy, table, loading } from "./ui.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const flash = document.getElementById("flash");

let config = { environment: "production", currencies: [] };
// What a screen started (live streams): stopped when the next screen renders.
let screenAbort = new AbortController();

function say(text, kind = "info") {
  clear(flash, text ? h("p", { class: `flash ${kind}` }, text) : null);
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function user() {
  return api.current()?.user ?? null;
}

function hasRole(role) {
  return (user()?.roles ?? []).includes(role);
}

const isBanker = () => hasRole("banker") || hasRole("admin");

function link(href, text, attrs = {}) {
  return h("a", { href, ...attrs }, text);
}

function screen(title, ...children) {
  clear(main, h("h1", {}, title), children);
  document.title = `${title} · tally console`;
  main.focus({ preventScroll: true });
}

// A screen's own renderer: it renders only while its route is current, so a screen whose data
// arrives after the user moved on (or after the session ended) never covers the next one.
function screenHere() {
  const signal = screenAbort.signal;
  return (title, ...children) => {
    if (!signal.aborted) screen(title, ...children);
  };
}

function renderChrome() {
  const me = user();
  nav.hidden = !me;
  if (!me) {
    clear(nav);
    clear(who);
    return;
  }
  const here = location.hash.split("?")[0];
  const item = (href, text) =>
    h("li", {}, link(href, text, here.startsWith(href) ? { "aria-current": "page" } : {}));
  clear(
    nav,
    h(
      "ul",
      {},
      item("#/accounts", "Accounts"),
      item("#/send", "Send"),
      item("#/convert", "Convert"),
      item("#/sessions", "Sessions"),
      hasRole("admin") ? item("#/admin", "Roles") : null,
    ),
  );
  const out = h("button", { type: "button", class: "link", id: "logout" }, "Log out");
  out.addEventListener("click", () =>
    busy(out, async () => {
      try {
        await api.logout();
      } catch {
        // The session is forgotten here whatever the server said.
      }
      say("You are logged out.");
      go("#/login");
    }),
  );
  clear(who, h("span", { class: "username" }, me.username), " ", h("span", { class: "roles" }, (me.roles ?? []).join(", ")), " ", out);
}

// ---------------------------------------------------------------- signing up and in

function loginScreen() {
  const username = field("Username", { name: "username", autocomplete: "username", autocapitalize: "none", spellcheck: "false", required: true }, { check: (v) => (v ? "" : "Enter your username.") });
  const password = field("Password", { name: "password", type: "password", autocomplete: "current-password", required: true }, { check: (v) => (v ? "" : "Enter your password.") });
  const f = form({ id: "login-form", "aria-label": "Log in" }, [username, password], "Log in", async () => {
    await api.login(username.input.value.trim(), password.input.value);
    say("");
    go("#/accounts");
  });
  screen("Log in", f.element, h("p", {}, "New here? ", link("#/signup", "Create a user")), h("p", { class: "hint" }, "The API explorer is at ", link("/docs", "/docs"), "."));
  username.input.focus();
}

function signupScreen() {
  const username = field("Username", { name: "username", autocomplete: "username", autocapitalize: "none", spellcheck: "false", maxlength: 32 }, { hint: "3 to 32 characters: a–z, 0–9 and _. It never changes.", check: checkUsername });
  const fullName = field("Full name", { name: "fullName", autocomplete: "name", maxlength: 128 }, { check: checkFullName });
  const email = field("Email", { name: "email", type: "email", autocomplete: "email" }, { hint: "We mail a link to verify it.", check: checkEmail });
  const password = field("Password", { name: "password", type: "password", autocomplete: "new-password" }, { hint: "12 to 128 characters.", check: checkPassword });
  const f = form({ id: "signup-form", "aria-label": "Sign up" }, [username, fullName, email, password], "Create user", async () => {
    const created = await api.call(
      "POST",
      "/v1/users",
      { username: username.input.value, fullName: fullName.input.value.trim(), email: email.input.value.trim(), password: password.input.value },
      { auth: false },
    );
    checkMailScreen(created);
  });
  screen("Create a user", f.element, h("p", {}, "Have one? ", link("#/login", "Log in")));
  username.input.focus();
}

function checkMailScreen(created) {
  history.replaceState(null, "", "#/check-mail");
  const development = config.environment === "development";
  screen(
    "Check your mail",
    h("p", { id: "check-mail" }, "We sent a verification link to ", h("strong", {}, created.email), ". Open it to verify the address of ", h("strong", {}, created.username), "."),
    development
      ? h(
          "div",
          { class: "note" },
          h("p", {}, "This server runs in development. Without SMTP_URL, tally worker writes every mail as an .eml file into its TALLY_MAIL_DIR (.dev-mail/ under make run) and logs the file's path; open the link in that file."),
        )
      : null,
    h("p", {}, "Or enter the verification id and code from the mail: ", link("#/verify", "verify by hand"), "."),
    h("p", {}, link("#/login", "Log in"), " (you can do that before verifying)."),
  );
}

function verifyScreen(params) {
  const id = field("Verification id", { name: "verificationId", value: params.get("verification_id") ?? params.get("verificationId") ?? "" }, { check: checkUuid });
  const code = field("Code", { name: "code", autocomplete: "one-time-code", value: params.get("code") ?? "" }, { check: (v) => (v.trim() ? "" : "Enter the code from the mail.") });
  // The code was in the fragment of the mailed link: take it out of the address bar and the
  // history now that the form holds it.
  if (params.has("code")) history.replaceState(null, "", "#/verify");
  const result = h("div", { id: "verify-result" });
  const f = form({ id: "verify-form", "aria-label": "Verify your email" }, [id, code], "Verify", async () => {
    const answer = await api.call("POST", "/v1/users:verifyEmail", { verificationId: id.input.value.trim(), code: code.input.value.trim() }, { auth: false });
    clear(result, h("p", { class: "ok" }, `The address of ${answer.username} is verified.`), h("p", {}, link(user() ? "#/accounts" : "#/login", user() ? "To your accounts" : "Log in")));
  });
  screen("Verify your email", f.element, result);
  if (id.input.value && code.input.value) f.element.requestSubmit();
}

// ---------------------------------------------------------------- accounts

function accountLabel(a) {
  return `${a.name || "Account"} (${a.currency}) · ${formatAmount(a.availableBalance, a.currency)}`;
}

async function listAccounts(owner, pageToken = "") {
  const query = new URLSearchParams({ pageSize: "50" });
  if (owner) query.set("owner", owner);
  if (pageToken) query.set("pageToken", pageToken);
  return api.call("GET", `/v1/accounts?${query}`);
}

async function accountsScreen(params) {
  const show = screenHere();
  const owner = params.get("owner") ?? "";
  const list = h("div", { id: "accounts" }, loading());
  const parts = [];
  if (isBanker()) {
    const ownerField = field("Owner", { name: "owner", value: owner, autocapitalize: "none" }, { hint: "Bankers see anyone's accounts: a username, or empty for yours.", check: (v) => (v === "" ? "" : checkUsername(v)) });
    const f = form({ id: "owner-form", class: "inline", "aria-label": "Whose accounts" }, [ownerField], "Show", async () => {
      go(ownerField.input.value ? `#/accounts?owner=${encodeURIComponent(ownerField.input.value)}` : "#/accounts");
    });
    parts.push(f.element);
  }
  parts.push(list, h("h2", {}, "Open an account"), openAccountForm(owner).element);
  show(owner ? `Accounts of ${owner}` : "Your accounts", parts);
  await showAccounts(list, owner, "");
}

async function showAccounts(list, owner, pageToken) {
  try {
    const answer = await listAccounts(owner, pageToken);
    const rows = answer.accounts.map((a) =>
      h(
        "tr",
        {},
        h("td", {}, link(`#/accounts/${encodeURIComponent(a.accountId)}`, a.name || "(no name)")),
        h("td", {}, a.currency),
        h("td", { class: "num" }, formatAmount(a.balance, a.currency)),
        h("td", { class: "num" }, formatAmount(a.availableBalance, a.currency)),
        h("td", { class: "id" }, a.accountId),
      ),
    );
    const more = answer.nextPageToken
      ? h("button", { type: "button", onclick: () => showAccounts(list, owner, answer.nextPageToken) }, "More")
      : null;
    clear(list, rows.length ? table(["Name", "Currency", "Balance", "Available", "Account id"], rows, "Accounts") : h("p", {}, "No accounts yet."), more);
  } catch (error) {
    clear(list, h("p", { class: "form-message error", role: "alert" }, error.message));
  }
}

function openAccountForm(owner) {
  const currency = field("Currency", { tag: "select", name: "currency", options: currencies().map((c) => option(c)) });
  const name = field("Name", { name: "name", maxlength: 64 }, { hint: "Optional, like Savings.", check: checkFullName });
  const fields = [currency, name];
  let ownerField = null;
  if (isBanker()) {
    ownerField = field("Owner", { name: "owner", value: owner, autocapitalize: "none" }, { hint: "Bankers open accounts for anyone; empty for yourself.", check: (v) => (v === "" ? "" : checkUsername(v)) });
    fields.push(ownerField);
  }
  return form({ id: "open-account-form", "aria-label": "Open an account" }, fields, "Open account", async () => {
    const body = { currency: currency.input.value };
    if (name.input.value.trim()) body.name = name.input.value.trim();
    if (ownerField?.input.value) body.owner = ownerField.input.value;
    const account = await api.call("POST", "/v1/accounts", body);
    go(`#/accounts/${encodeURIComponent(account.accountId)}`);
  });
}

function balances(a) {
  return h(
    "dl",
    { class: "balances", id: "balances" },
    h("div", {}, h("dt", {}, "Balance"), h("dd", { id: "balance" }, formatAmount(a.balance, a.currency))),
    h("div", {}, h("dt", {}, "Available"), h("dd", { id: "available" }, formatAmount(a.availableBalance, a.currency))),
    h("div", {}, h("dt", {}, "Pending out"), h("dd", {}, formatAmount(a.pendingDebits, a.currency))),
    h("div", {}, h("dt", {}, "Pending in"), h("dd", {}, formatAmount(a.pendingCredits, a.currency))),
  );
}

async function accountScreen(accountId) {
  const show = screenHere();
  show("Account", loading());
  let account;
  try {
    account = await api.call("GET", `/v1/accounts/${encodeURIComponent(accountId)}`);
  } catch (error) {
    show("Account", h("p", { class: "form-message error", role: "alert" }, error.message));
    return;
  }
  const summary = h("div", {}, balances(account));
  const statement = h("div", { id: "statement" }, loading());
  const live = h("p", { id: "live-status", class: "hint", "aria-live": "polite" }, "");
  const pages = { tokens: [""], index: 0 };
  const reload = async () => {
    const fresh = await api.call("GET", `/v1/accounts/${encodeURIComponent(accountId)}`);
    clear(summary, balances(fresh));
    await showStatement(statement, fresh, pages);
  };
  const liveButton = h("button", { type: "button", id: "watch", "aria-pressed": "false" }, "Watch live");
  let watching = null;
  liveButton.addEventListener("click", () => {
    if (watching) {
      watching.abort();
      watching = null;
      liveButton.setAttribute("aria-pressed", "false");
      liveButton.textContent = "Watch live";
      live.textContent = "";
      return;
    }
    watching = new AbortController();
    screenAbort.signal.addEventListener("abort", () => watching?.abort());
    liveButton.setAttribute("aria-pressed", "true");
    liveButton.textContent = "Stop watching";
    watchAccount(account, watching.signal, live, reload, pages);
  });
  const parts = [
    h("p", { class: "meta" }, `${account.currency} account of `, h("strong", {}, account.owner), " · id ", h("code", { class: "id", id: "account-id" }, account.accountId), account.closedAt ? " · closed" : ""),
    summary,
    h("p", { class: "actions" }, link(`#/send?from=${encodeURIComponent(account.accountId)}`, "Send from this account", { class: "button" }), " ", liveButton),
    live,
    h("h2", {}, "Statement"),
    statement,
  ];
  if (isBanker()) {
    parts.push(h("h2", {}, "Deposit or withdraw"), bankerForm(account, reload).element);
  }
  show(account.name || "Account", parts);
  await showStatement(statement, account, pages);
}

async function showStatement(where, account, pages) {
  const query = new URLSearchParams({ pageSize: "10" });
  const token = pages.tokens[pages.index];
  if (token) query.set("pageToken", token);
  try {
    const answer = await api.call("GET", `/v1/accounts/${encodeURIComponent(account.accountId)}/entries?${query}`);
    const rows = answer.entries.map((e) =>
      h(
        "tr",
        {},
        h("td", {}, formatTime(e.createdAt)),
        h("td", {}, link(`#/transfers/${encodeURIComponent(e.transferId)}`, e.transferId.slice(0, 8) + "…", { "aria-label": `Transfer ${e.transferId}` })),
        h("td", { class: `num ${BigInt(e.amount) < 0n ? "out" : "in"}` }, formatAmount(e.amount, account.currency)),
        h("td", { class: "num" }, formatAmount(e.balanceAfter, account.currency)),
      ),
    );
    if (answer.nextPageToken) pages.tokens[pages.index + 1] = answer.nextPageToken;
    else pages.tokens.length = pages.index + 1;
    const newer = h("button", { type: "button", disabled: pages.index === 0 }, "Newer");
    const older = h("button", { type: "button", disabled: !answer.nextPageToken }, "Older");
    newer.addEventListener("click", () => busy(newer, async () => { pages.index -= 1; await showStatement(where, account, pages); }));
    older.addEventListener("click", () => busy(older, async () => { pages.index += 1; await showStatement(where, account, pages); }));
    clear(
      where,
      rows.length ? table(["When", "Transfer", "Amount", "Running balance"], rows, `Entries, newest first (page ${pages.index + 1})`) : h("p", {}, "No entries yet."),
      h("div", { class: "pager" }, newer, older),
    );
  } catch (error) {
    clear(where, h("p", { class: "form-message error", role: "alert" }, error.message));
  }
}

async function watchAccount(account, signal, status, reload, pages) {
  let pending = null;
  status.textContent = "Connecting…";
  try {
    await api.stream(
      `/v1/accounts/${encodeURIComponent(account.accountId)}:watch`,
      (message) => {
        status.textContent = "Live: the statement follows every change.";
        status.dataset.live = "true";
        if (!message.event) return;
        status.textContent = `Live · last event ${message.event.type} (#${message.sequence})`;
        // Replays and bursts: one reload for whatever arrived within 150 ms.
        clearTimeout(pending);
        pending = setTimeout(() => {
          pages.index = 0;
          reload().catch(() => {});
        }, 150);
      },
      signal,
    );
    if (!signal.aborted) status.textContent = "The live stream ended.";
  } catch (error) {
    status.textContent = `The live stream stopped: ${error.message}`;
  }
}

// A form whose submission carries one client-chosen id: a double click, or a retry after a
// lost answer, sends the same id again, and the server answers the first result instead of
// moving the money twice. The id changes only when what the form says changes, or after a
// success.
function idempotentForm(attrs, fields, label, action) {
  let id = crypto.randomUUID();
  const f = form(attrs, fields, label, async () => {
    const result = await action(id);
    id = crypto.randomUUID();
    return result;
  });
  f.element.addEventListener("input", () => {
    id = crypto.randomUUID();
  });
  f.element.addEventListener("change", () => {
    id = crypto.randomUUID();
  });
  return f;
}

function bankerForm(account, reload) {
  const kind = field("Operation", { tag: "select", name: "operation", options: [option("deposit", "Deposit"), option("withdraw", "Withdraw")] });
  const amount = field(`Amount (${account.currency})`, { name: "amount", inputmode: "decimal", autocomplete: "off" }, { check: (v) => { try { parseAmount(v, account.currency); return ""; } catch (e) { return e.message; } } });
  const memo = field("Memo", { name: "memo", maxlength: 256 }, { hint: "Optional." });
  return idempotentForm({ id: "banker-form", "aria-label": "Deposit or withdraw" }, [kind, amount, memo], "Apply", async (requestId) => {
    const body = { requestId, amount: parseAmount(amount.input.value, account.currency) };
    if (memo.input.value.trim()) body.memo = memo.input.value.trim();
    const verb = kind.input.value === "withdraw" ? "withdraw" : "deposit";
    const transfer = await api.call("POST", `/v1/accounts/${encodeURIComponent(account.accountId)}:${verb}`, body);
    await reload();
    if (transfer.status === "TRANSFER_STATUS_FAILED") throw new Error(`Recorded as failed: ${enumLabel(transfer.failureReason, "FAILURE_REASON_")}.`);
    amount.input.value = "";
    return `${verb === "deposit" ? "Deposited" : "Withdrew"} ${formatAmount(transfer.amount, transfer.currency)}.`;
  });
}

// ---------------------------------------------------------------- sending money

async function sendScreen(params) {
  const show = screenHere();
  show("Send money", loading());
  let accounts;
  try {
    accounts = (await listAccounts("")).accounts.filter((a) => !a.closedAt);
  } catch (error) {
    show("Send money", h("p", { class: "form-message error", role: "alert" }, error.message));
    return;
  }
  if (!accounts.length) {
    show("Send money", h("p", {}, "Open an account first: ", link("#/accounts", "Accounts"), "."));
    return;
  }
  const wanted = params.get("from");
  const from = field("From", { tag: "select", name: "from", options: accounts.map((a) => option(a.accountId, accountLabel(a), a.accountId === wanted)) });
  const currencyOf = () => accounts.find((a) => a.accountId === from.input.value)?.currency ?? "";
  const to = field("To account id", { name: "to", autocomplete: "off", spellcheck: "false", value: params.get("to") ?? "" }, { hint: "The recipient's account id (a UUID): they find it on their account's page.", check: (v) => checkUuid(v) || (v.trim() === from.input.value ? "Choose another account than the one you send from." : "") });
  const amount = field("Amount", { name: "amount", inputmode: "decimal", autocomplete: "off" }, { hint: "In the currency of the account you send from.", check: (v) => { try { parseAmount(v, currencyOf()); return ""; } catch (e) { return e.message; } } });
  const memo = field("Memo", { name: "memo", maxlength: 256 }, { hint: "Optional; the recipient sees it." });
  const hold = h("input", { type: "checkbox", id: "hold", name: "hold" });
  const holdMinutes = field("Hold for (minutes)", { name: "holdMinutes", type: "number", min: 1, max: 10080, value: "60", inputmode: "numeric" }, { check: (v) => (!hold.checked || (Number.isInteger(Number(v)) && Number(v) >= 1 && Number(v) <= 10080) ? "" : "1 to 10,080 minutes (7 days).") });
  const holdBox = h("div", { class: "field check" }, hold, h("label", { for: "hold" }, "Only reserve the money (a hold), to post or void later"));
  // The hold's length is asked for only when it is a hold.
  holdMinutes.wrapper.hidden = true;
  hold.addEventListener("change", () => {
    holdMinutes.wrapper.hidden = !hold.checked;
  });
  const result = h("div", { id: "send-result", "aria-live": "polite" });
  const f = idempotentForm({ id: "send-form", "aria-label": "Send money" }, [from, to, amount, memo, holdBox, holdMinutes], "Send", async (transferId) => {
    const currency = currencyOf();
    const body = { transferId, fromAccountId: from.input.value, toAccountId: to.input.value.trim(), amount: parseAmount(amount.input.value, currency), currency };
    if (memo.input.value.trim()) body.memo = memo.input.value.trim();
    if (hold.checked) {
      body.pending = true;
      body.timeout = `${Number(holdMinutes.input.value) * 60}s`;
    }
    const transfer = await api.call("POST", "/v1/transfers", body);
    clear(result, transferSummary(transfer));
    if (transfer.status === "TRANSFER_STATUS_FAILED") throw new Error(`The transfer was recorded as failed: ${enumLabel(transfer.failureReason, "FAILURE_REASON_")}.`);
    amount.input.value = "";
    memo.input.value = "";
    return hold.checked ? `Held ${formatAmount(transfer.amount, currency)}.` : `Sent ${formatAmount(transfer.amount, currency)}.`;
  });
  show("Send money", f.element, result);
}

function transferSummary(t) {
  return h(
    "p",
    { class: "summary" },
    `${enumLabel(t.kind, "TRANSFER_KIND_")} of ${formatAmount(t.amount, t.currency)}: ${enumLabel(t.status, "TRANSFER_STATUS_")}. `,
    link(`#/transfers/${encodeURIComponent(t.transferId)}`, "Details"),
  );
}

async function transferScreen(transferId) {
  const show = screenHere();
  show("Transfer", loading());
  let t;
  try {
    t = await api.call("GET", `/v1/transfers/${encodeURIComponent(transferId)}`);
  } catch (error) {
    show("Transfer", h("p", { class: "form-message error", role: "alert" }, error.message));
    return;
  }
  const row = (label, value) => h("div", {}, h("dt", {}, label), h("dd", {}, value));
  const accountLink = (id) => (id ? link(`#/accounts/${encodeURIComponent(id)}`, id, { class: "id" }) : "—");
  const details = h(
    "dl",
    { class: "details", id: "transfer" },
    row("Transfer id", h("code", { class: "id" }, t.transferId)),
    row("Kind", enumLabel(t.kind, "TRANSFER_KIND_")),
    row("Status", h("span", { id: "transfer-status" }, enumLabel(t.status, "TRANSFER_STATUS_"))),
    t.status === "TRANSFER_STATUS_FAILED" ? row("Why", enumLabel(t.failureReason, "FAILURE_REASON_")) : null,
    row("Amount", formatAmount(t.amount, t.currency)),
    t.postedAmount !== undefined && t.postedAmount !== null ? row("Posted", formatAmount(t.postedAmount, t.currency)) : null,
    row("From", accountLink(t.fromAccountId)),
    row("To", accountLink(t.toAccountId)),
    row("Memo", t.memo || "—"),
    row("Created", formatTime(t.createdAt)),
    t.expiresAt ? row("Hold expires", formatTime(t.expiresAt)) : null,
    t.reversesTransferId ? row("Reverses", link(`#/transfers/${encodeURIComponent(t.reversesTransferId)}`, t.reversesTransferId)) : null,
    t.reversedAmount && t.reversedAmount !== "0" ? row("Reversed", formatAmount(t.reversedAmount, t.currency)) : null,
  );
  const parts = [details];
  if (t.status === "TRANSFER_STATUS_PENDING") {
    const message = h("div", { class: "form-message", role: "alert" });
    const post = h("button", { type: "button", class: "primary", id: "post-hold" }, "Post the hold");
    const voidIt = h("button", { type: "button", id: "void-hold" }, "Void the hold");
    const settle = (button, verb) =>
      button.addEventListener("click", () =>
        busy(button, async () => {
          try {
            await api.call("POST", `/v1/transfers/${encodeURIComponent(t.transferId)}:${verb}`, {});
            await transferScreen(t.transferId);
          } catch (error) {
            showError(message, error);
          }
        }),
      );
    settle(post, "post");
    settle(voidIt, "void");
    parts.push(h("h2", {}, "Settle the hold"), h("div", { class: "actions" }, post, " ", voidIt), message);
  }
  show("Transfer", parts);
}

// ---------------------------------------------------------------- exchange

function ratesTable(rates) {
  return table(
    ["Pair", "Rate", "Spread", "Updated"],
    rates.map((r) => h("tr", {}, h("td", {}, `${r.baseCurrency}/${r.quoteCurrency}`), h("td", { class: "num" }, r.rate), h("td", { class: "num" }, `${r.spreadBps} bps`), h("td", {}, formatTime(r.updatedAt)))),
    "Mid rates (live)",
  );
}

async function convertScreen() {
  const show = screenHere();
  show("Convert", loading());
  let accounts;
  try {
    accounts = (await listAccounts("")).accounts.filter((a) => !a.closedAt);
  } catch (error) {
    show("Convert", h("p", { class: "form-message error", role: "alert" }, error.message));
    return;
  }
  const rates = new Map();
  const ratesView = h("div", { id: "rates" }, loading("Waiting for rates…"));
  const showRates = () => clear(ratesView, rates.size ? ratesTable([...rates.values()]) : h("p", {}, "No rates are set yet: a banker sets them (POST /v1/rates)."));
  const signal = screenAbort.signal;
  api
    .stream(
      "/v1/rates:watch",
      (message) => {
        if (message.snapshot) rates.clear();
        for (const r of message.rates ?? []) rates.set(`${r.baseCurrency}/${r.quoteCurrency}`, r);
        if (message.snapshot || (message.rates ?? []).length) showRates();
      },
      signal,
    )
    .catch((error) => clear(ratesView, h("p", { class: "form-message error" }, `Live rates stopped: ${error.message}`)));
  if (accounts.length < 2) {
    show("Convert", ratesView, h("p", {}, "Converting needs two of your accounts in different currencies: ", link("#/accounts", "open one"), "."));
    return;
  }
  const from = field("From", { tag: "select", name: "from", options: accounts.map((a) => option(a.accountId, accountLabel(a))) });
  const to = field("To", { tag: "select", name: "to", options: accounts.map((a, i) => option(a.accountId, accountLabel(a), i === 1)) });
  const byId = (id) => accounts.find((a) => a.accountId === id);
  const amount = field("Amount to convert", { name: "amount", inputmode: "decimal", autocomplete: "off" }, { hint: "In the currency of the From account.", check: (v) => { try { parseAmount(v, byId(from.input.value)?.currency); return ""; } catch (e) { return e.message; } } });
  const quoteView = h("div", { id: "quote", "aria-live": "polite" });
  const f = form({ id: "quote-form", "aria-label": "Get a quote" }, [from, to, amount], "Get a quote", async () => {
    const source = byId(from.input.value);
    const target = byId(to.input.value);
    if (source.currency === target.currency) throw new Error("Choose two accounts in different currencies.");
    const quote = await api.call("POST", "/v1/quotes", { fromCurrency: source.currency, toCurrency: target.currency, fromAmount: parseAmount(amount.input.value, source.currency) });
    showQuote(quoteView, quote, source, target);
  });
  show("Convert", ratesView, h("h2", {}, "Quote and convert"), f.element, quoteView);
}

function showQuote(where, quote, source, target) {
  // One conversion id per quote: converting twice with it answers the first conversion.
  const conversionId = crypto.randomUUID();
  const message = h("div", { class: "form-message", role: "alert" });
  const convert = h("button", { type: "button", class: "primary", id: "convert" }, "Convert");
  convert.addEventListener("click", () =>
    busy(convert, async () => {
      try {
        const done = await api.call("POST", "/v1/conversions", { conversionId, quoteId: quote.quoteId, fromAccountId: source.accountId, toAccountId: target.accountId });
        const failed = [done.debit, done.credit].find((t) => t?.status === "TRANSFER_STATUS_FAILED");
        if (failed) throw new Error(`The conversion failed: ${enumLabel(failed.failureReason, "FAILURE_REASON_")}.`);
        message.className = "form-message ok";
        message.textContent = `Converted ${formatAmount(done.quote.fromAmount, done.quote.fromCurrency)} into ${formatAmount(done.quote.toAmount, done.quote.toCurrency)}.`;
        convert.remove();
      } catch (error) {
        showError(message, error);
      }
    }),
  );
  clear(
    where,
    h("p", { class: "summary" }, `${formatAmount(quote.fromAmount, quote.fromCurrency)} → ${formatAmount(quote.toAmount, quote.toCurrency)} at ${quote.rate}; the quote holds until ${formatTime(quote.expiresAt)}.`),
    h("div", { class: "actions" }, convert),
    message,
  );
}

// ---------------------------------------------------------------- sessions and roles

async function sessionsScreen() {
  const show = screenHere();
  show("Sessions", loading());
  const me = user();
  let answer;
  try {
    answer = await api.call("GET", `/v1/users/${encodeURIComponent(me.username)}/sessions`);
  } catch (error) {
    show("Sessions", h("p", { class: "form-message error", role: "alert" }, error.message));
    return;
  }
  const message = h("div", { class: "form-message", role: "alert" });
  const current = api.current()?.sessionId;
  const rows = answer.sessions.map((s) => {
    const live = !s.revokedAt && Date.parse(s.expiresAt) > Date.now();
    let action = live ? h("button", { type: "button", class: "revoke", dataset: { session: s.sessionId } }, s.sessionId === current ? "Revoke (logs you out)" : "Revoke") : "—";
    if (live) {
      action.addEventListener("click", () =>
        busy(action, async () => {
          try {
            await api.call("DELETE", `/v1/sessions/${encodeURIComponent(s.sessionId)}`);
            if (s.sessionId === current) {
              api.forget();
              say("You revoked this session: log in again.");
              go("#/login");
              return;
            }
            await sessionsScreen();
          } catch (error) {
            showError(message, error);
          }
        }),
      );
    }
    return h(
      "tr",
      {},
      h("td", {}, formatTime(s.createdAt), s.sessionId === current ? h("span", { class: "tag" }, " this one") : null),
      h("td", { class: "agent" }, s.userAgent || "—"),
      h("td", {}, s.clientAddress || "—"),
      h("td", {}, s.revokedAt ? `revoked ${formatTime(s.revokedAt)}` : live ? `until ${formatTime(s.expiresAt)}` : "expired"),
      h("td", {}, action),
    );
  });
  show("Sessions", table(["Opened", "Browser or client", "Address", "State", ""], rows, `Sessions of ${me.username}, newest first`), message);
}

async function adminScreen() {
  const show = screenHere();
  show("Roles", loading());
  let roles;
  try {
    roles = (await api.call("GET", "/v1/roles")).roles;
  } catch (error) {
    show("Roles", h("p", { class: "form-message error", role: "alert" }, error.message));
    return;
  }
  const username = field("Username", { name: "username", autocapitalize: "none" }, { check: checkUsername });
  const role = field("Role", { tag: "select", name: "role", options: roles.map((r) => option(r.name)) });
  const result = h("div", { id: "role-result", "aria-live": "polite" });
  const showUser = (u) => clear(result, h("p", { class: "ok" }, `${u.username} now holds: ${(u.roles ?? []).join(", ") || "no role"}.`));
  const grant = form({ id: "grant-form", "aria-label": "Grant or revoke a role" }, [username, role], "Grant", async () => {
    showUser(await api.call("POST", `/v1/users/${encodeURIComponent(username.input.value)}/roles`, { role: role.input.value }));
  });
  const revoke = h("button", { type: "button", id: "revoke-role" }, "Revoke");
  revoke.addEventListener("click", () => {
    if (!username.validate()) return;
    busy(revoke, async () => {
      try {
        grant.message.textContent = "";
        showUser(await api.call("DELETE", `/v1/users/${encodeURIComponent(username.input.value)}/roles/${encodeURIComponent(role.input.value)}`));
      } catch (error) {
        showError(grant.message, error);
      }
    });
  });
  grant.element.querySelector(".actions").append(" ", revoke);
  show(
    "Roles",
    grant.element,
    result,
    h("h2", {}, "The roles"),
    table(["Role", "What it allows"], roles.map((r) => h("tr", {}, h("td", {}, r.name), h("td", {}, r.description, h("br"), h("small", {}, (r.permissions ?? []).join(", "))))), "Built-in roles"),
  );
}

// ---------------------------------------------------------------- routing

const PUBLIC = new Set(["login", "signup", "verify", "check-mail"]);

async function route() {
  screenAbort.abort();
  screenAbort = new AbortController();
  const [path, query] = location.hash.replace(/^#\/?/, "").split("?");
  const params = new URLSearchParams(query ?? "");
  const [name, id] = path.split("/");
  renderChrome();
  if (!user() && !PUBLIC.has(name)) {
    loginScreen();
    return;
  }
  switch (name) {
    case "login":
      return user() ? go("#/accounts") : loginScreen();
    case "signup":
      return signupScreen();
    case "check-mail":
      return go(user() ? "#/accounts" : "#/login");
    case "verify":
      return verifyScreen(params);
    case "accounts":
      return id ? accountScreen(decodeURIComponent(id)) : accountsScreen(params);
    case "send":
      return sendScreen(params);
    case "transfers":
      return transferScreen(decodeURIComponent(id ?? ""));
    case "convert":
      return convertScreen();
    case "sessions":
      return sessionsScreen();
    case "admin":
      return hasRole("admin") ? adminScreen() : screen("Roles", h("p", {}, "Only admins grant roles."));
    default:
      return go("#/accounts");
  }
}

async function start() {
  try {
    const response = await fetch("/console/config.json", { credentials: "omit" });
    config = await response.json();
  } catch {
    // The defaults: amounts shown without minor units until the page is reloaded.
  }
  setCurrencies(config.currencies ?? []);
  api.whenExpired((message) => {
    say(message, "warn");
    go("#/login");
  });
  window.addEventListener("hashchange", () => {
    route();
  });
  await route();
  performance.mark("console-ready");
  document.documentElement.dataset.ready = "true";
}

start();

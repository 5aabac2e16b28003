// Amounts and the client-side checks. Money is never a float here: minor units travel as the
// decimal strings the API uses for int64, and are converted with BigInt by the currency's
// exponent (from /console/config.json, i.e. the server's TALLY_CURRENCIES).
//
// The checks mirror the server's (src/validate.rs, src/ledger/currency.rs) so that a form
// says what is wrong before sending; the server still decides, and its message is shown when
// it refuses.

const INT64_MAX = 9223372036854775807n;

let exponents = new Map();

export function setCurrencies(list) {
  exponents = new Map(list.map((c) => [c.code, c.exponent]));
}

export function currencies() {
  return [...exponents.keys()];
}

export function exponentOf(code) {
  return exponents.has(code) ? exponents.get(code) : 0;
}

// "123456", "USD" → "1,234.56 USD"; negative amounts keep their sign.
export function formatAmount(minor, code) {
  const exponent = exponentOf(code);
  let value = BigInt(minor ?? 0);
  const negative = value < 0n;
  if (negative) value = -value;
  const digits = value.toString().padStart(exponent + 1, "0");
  const whole = digits.slice(0, digits.length - exponent) || "0";
  const fraction = exponent ? "." + digits.slice(digits.length - exponent) : "";
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${negative ? "−" : ""}${grouped}${fraction} ${code}`;
}

// "12.3" in USD → "1230" (minor units, as a string); throws an Error saying why it is refused.
export function parseAmount(text, code) {
  const exponent = exponentOf(code);
  const value = String(text).trim().replace(/,/g, "");
  if (value === "") throw new Error("Enter an amount.");
  const match = /^(\d+)(?:\.(\d*))?$/.exec(value);
  if (!match) throw new Error("Enter a positive number, like 12.50.");
  const fraction = match[2] ?? "";
  if (fraction.length > exponent) {
    throw new Error(
      exponent === 0
        ? `${code} has no minor units: enter a whole number.`
        : `${code} has ${exponent} decimal places at most.`,
    );
  }
  const minor = BigInt(match[1] + fraction.padEnd(exponent, "0"));
  if (minor <= 0n) throw new Error("The amount must be more than zero.");
  if (minor > INT64_MAX) throw new Error("That amount is too large.");
  return minor.toString();
}

const RESERVED = ["system", "tally", "root"];

// What the server accepts for a new username (src/validate.rs: 3 to 32 of [a-z0-9_]).
export function checkUsername(value) {
  if (value.length < 3 || value.length > 32) return "A username has 3 to 32 characters.";
  if (!/^[a-z0-9_]+$/.test(value)) return "Use lower-case letters, digits and _ only.";
  if (RESERVED.includes(value)) return "That username is reserved.";
  return "";
}

export function checkPassword(value) {
  const length = [...value].length;
  if (length < 12) return "A password has at least 12 characters.";
  if (length > 128) return "A password has at most 128 characters.";
  return "";
}

export function checkFullName(value) {
  if ([...value.trim()].length > 128) return "At most 128 characters.";
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value)) return "No control characters, please.";
  return "";
}

export function checkEmail(value) {
  const v = value.trim();
  if (v.length > 254) return "That address is too long.";
  if (!/^[^\s@]+@[^\s@.]+(\.[^\s@.]+)+$/.test(v)) return "Enter an address like name@example.com.";
  return "";
}

export function checkUuid(value) {
  if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(value.trim())) {
    return "That is not an id (a UUID like 0190f5c2-…).";
  }
  return "";
}

export function formatTime(text) {
  if (!text) return "";
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString();
}

// TRANSFER_STATUS_SUCCEEDED → "succeeded".
export function enumLabel(value, prefix) {
  return String(value ?? "").replace(prefix, "").toLowerCase().replace(/_/g, " ");
}

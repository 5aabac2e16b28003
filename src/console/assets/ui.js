// DOM helpers. Every string becomes a text node (or an attribute value): nothing the server or
// a user typed is ever parsed as HTML, and nothing here uses innerHTML.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      element.className = value;
    } else if (key === "dataset") {
      Object.assign(element.dataset, value);
    } else if (key === "value") {
      element.value = value;
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

let fieldCount = 0;

// A labelled input with a place for its error; `check(value)` returns "" or what is wrong.
export function field(label, attrs = {}, { hint, check } = {}) {
  const id = attrs.id ?? `f${++fieldCount}`;
  const errorId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : undefined;
  const input =
    attrs.tag === "select"
      ? h("select", { ...attrs, tag: undefined, id, options: undefined }, attrs.options ?? [])
      : h("input", { type: "text", ...attrs, id, "aria-describedby": [hintId, errorId].filter(Boolean).join(" ") });
  if (attrs.tag === "select") input.setAttribute("aria-describedby", errorId);
  const error = h("p", { class: "field-error", id: errorId, "aria-live": "polite" });
  const wrapper = h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
    input,
    error,
  );
  const validate = () => {
    const problem = check ? check(input.value) : "";
    error.textContent = problem;
    input.setAttribute("aria-invalid", problem ? "true" : "false");
    return !problem;
  };
  input.addEventListener("blur", () => {
    if (input.value !== "") validate();
  });
  input.addEventListener("input", () => {
    if (error.textContent) validate();
  });
  return { wrapper, input, error, validate };
}

export function option(value, label = value, selected = false) {
  return h("option", { value, selected }, label);
}

// A form whose submit runs `action` with a loading state: the button is disabled and says it
// is working until the action settles, so a second click cannot start a second call. The
// action's error (the server's message, as it came) is shown in the form.
export function form(attrs, fields, submitLabel, action) {
  const message = h("div", { class: "form-message", role: "alert" });
  const button = h("button", { type: "submit", class: "primary" }, submitLabel);
  const element = h(
    "form",
    { novalidate: true, ...attrs },
    fields.map((f) => (f.wrapper ? f.wrapper : f)),
    message,
    h("div", { class: "actions" }, button),
  );
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button.disabled) return;
    const valid = fields.filter((f) => f.validate).map((f) => f.validate());
    if (valid.includes(false)) {
      const first = fields.find((f) => f.input?.getAttribute("aria-invalid") === "true");
      first?.input.focus();
      return;
    }
    message.textContent = "";
    message.className = "form-message";
    await busy(button, async () => {
      try {
        const done = await action();
        if (typeof done === "string") {
          message.className = "form-message ok";
          message.textContent = done;
        }
      } catch (error) {
        showError(message, error);
      }
    });
  });
  return { element, message, button };
}

export function showError(where, error) {
  where.className = "form-message error";
  where.textContent = error?.message ?? String(error);
}

// Runs `work` with `button` in its loading state.
export async function busy(button, work) {
  const label = button.textContent;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  button.classList.add("busy");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
    button.classList.remove("busy");
    button.textContent = label;
  }
}

export function table(headers, rows, caption) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
      h("tbody", {}, rows),
    ),
  );
}

export function loading(text = "Loading…") {
  return h("p", { class: "loading", role: "status" }, text);
}

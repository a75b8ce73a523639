// Small helpers every screen uses: escaping, fields with bound labels, errors at their field,
// buttons that cannot submit twice, the ID-number checksum (GB 11643).
export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

let counter = 0;
/** One labelled field. kind: text (default), select, textarea, checkbox, file, date, number, password, email. */
export function field({ name, label, kind = "text", value = "", hint = "", options = [], attrs = "", required = true }) {
  const id = `f-${name.replace(/[^\w-]/g, "-")}-${++counter}`;
  const described = `${id}-hint ${id}-error`;
  const req = required ? " required" : "";
  let control;
  if (kind === "select") {
    control = `<select id="${id}" name="${esc(name)}" aria-describedby="${described}"${req} ${attrs}>` +
      `<option value="">请选择</option>` +
      options.map((o) => { const [v, t] = Array.isArray(o) ? o : [o, o];
        return `<option value="${esc(v)}"${String(v) === String(value) ? " selected" : ""}>${esc(t)}</option>`; }).join("") +
      `</select>`;
  } else if (kind === "textarea") {
    control = `<textarea id="${id}" name="${esc(name)}" aria-describedby="${described}" rows="3" ${attrs}>${esc(value)}</textarea>`;
  } else if (kind === "checkbox") {
    return `<div class="field check" data-field="${esc(name)}"><input type="checkbox" id="${id}" name="${esc(name)}"` +
      ` aria-describedby="${described}"${value ? " checked" : ""} ${attrs}><label for="${id}">${label}</label>` +
      `<p class="hint" id="${id}-hint">${hint}</p><p class="error" id="${id}-error" aria-live="polite"></p></div>`;
  } else {
    control = `<input id="${id}" name="${esc(name)}" type="${kind}" value="${kind === "file" ? "" : esc(value)}"` +
      ` aria-describedby="${described}"${kind === "file" ? "" : req} ${attrs}>`;
  }
  return `<div class="field" data-field="${esc(name)}"><label for="${id}">${label}</label>${control}` +
    `<p class="hint" id="${id}-hint">${hint}</p><p class="error" id="${id}-error" aria-live="polite"></p></div>`;
}

export function clearErrors(form) {
  for (const node of form.querySelectorAll(".error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  form.querySelector(".form-error")?.replaceChildren();
}

/** The field wrapper for an API field name: exact, then its dotted prefixes, then aliases. */
function wrapperFor(form, name, aliases) {
  if (!name) return null;
  const tries = [aliases[name], name];
  const parts = name.split(".");
  while (parts.length > 1) { parts.pop(); tries.push(aliases[parts.join(".")], parts.join(".")); }
  for (const candidate of tries) {
    if (!candidate) continue;
    const node = form.querySelector(`[data-field="${CSS.escape(candidate)}"]`);
    if (node) return node;
  }
  return null;
}

export function setFieldError(form, name, message, aliases = {}) {
  const wrapper = wrapperFor(form, name, aliases);
  if (!wrapper) {
    const box = form.querySelector(".form-error");
    if (box) box.insertAdjacentHTML("beforeend", `<p>${esc(message)}</p>`);
    return null;
  }
  wrapper.querySelector(".error").textContent = message;
  wrapper.querySelector("input, select, textarea")?.setAttribute("aria-invalid", "true");
  return wrapper;
}

/** An API refusal shown next to its field (the API's `field`, and each of `details`). */
export function showError(form, error, aliases = {}) {
  clearErrors(form);
  const shown = [];
  const entries = error.details && error.details.length ? error.details : [{ field: error.field, message: error.message }];
  for (const entry of entries) {
    shown.push(setFieldError(form, entry.field || error.field, entry.message || error.message, aliases));
  }
  const first = shown.find(Boolean);
  if (first) first.querySelector("input, select, textarea")?.focus();
  else form.querySelector(".form-error")?.focus();
}

/** Runs `work` once per click: the button is disabled until it ends, so nothing is sent twice. */
export function guard(form, work, aliases = {}) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.submitter || form.querySelector("button[type=submit]");
    if (form.dataset.busy) return;
    form.dataset.busy = "1";
    const buttons = [...form.querySelectorAll("button[type=submit]")];
    buttons.forEach((b) => { b.disabled = true; });
    button?.setAttribute("aria-busy", "true");
    clearErrors(form);
    try {
      await work(new FormData(form), button);
    } catch (error) {
      if (error && error.code) showError(form, error, aliases);
      else { console.error(error); setFieldError(form, null, "出现意外错误，请稍后重试"); }
    } finally {
      delete form.dataset.busy;
      buttons.forEach((b) => { b.disabled = false; });
      button?.removeAttribute("aria-busy");
    }
  });
}

export const formError = `<div class="form-error" tabindex="-1" role="alert"></div>`;

const WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/** null when the number passes the checks a browser can make; else the API's own message. */
export function idNumberProblem(value) {
  const text = value.trim().toUpperCase();
  if (!/^\d{17}[\dX]$/.test(text)) return "请输入正确的身份证号";
  const sum = WEIGHTS.reduce((total, weight, i) => total + weight * Number(text[i]), 0);
  if ("10X98765432"[sum % 11] !== text[17]) return "请输入正确的身份证号";
  const y = +text.slice(6, 10), m = +text.slice(10, 12), d = +text.slice(12, 14);
  const date = new Date(Date.UTC(y, m - 1, d));
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== m - 1 || date.getUTCDate() !== d || date > new Date())
    return "请输入正确的身份证号";
  return null;
}

export function values(data, names) {
  const out = {};
  for (const name of names) { const v = data.get(name); if (v !== null && v !== "") out[name] = typeof v === "string" ? v.trim() : v; }
  return out;
}

export function date(value) { return value ? String(value).slice(0, 10) : ""; }
export function dateTime(value) {
  if (!value) return "";
  const d = new Date(value);
  return d.toLocaleString("zh-CN", { timeZone: "Asia/Shanghai", hour12: false });
}
export const KIND = { first_registration: "首次登记", re_registration: "再登记", replacement: "更换电子证", upgrade: "升级换发" };
export const STAGE = { initial: "初审", intermediate: "复审", final: "终审" };
export const LEVEL = { county: "区县", city: "地市", province: "省级" };
export const ITEM_STATUS = { pending: "待审核", approved: "已通过", rejected: "不通过", returned: "已退回" };
export const DEADLINE = { on_time: "期限内", near_due: "临近期限", overdue: "已超期" };

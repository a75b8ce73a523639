// The portal's router and the social worker's screens (注册 … 查看证书). Officers' and
// administrators' screens: staff.js. Every call goes to the gateway's HTTP API (api.js).
import * as api from "./api.js";
import { esc, field, guard, formError, idNumberProblem, setFieldError, clearErrors, values, date, dateTime,
         KIND } from "./ui.js";
import { staffRoutes, staffHome } from "./staff.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
// What the person typed in 注册 before being sent to 反馈 (kept in memory, never in the URL).
const carried = {};
// The 反馈 being followed: its id (also in sessionStorage, so a reload keeps it; never in the URL)
// and the ID number it was submitted with (memory only: typed again after a reload).
const FEEDBACK_KEY = "swms.portal.feedback";
const followed = { id_number: "" };

const STATUSES = ["未登记", "初审中", "初审不通过", "终审中", "终审不通过", "审核不通过", "已出证", "已出证待升级"];
const REJECTED = new Set(["初审不通过", "终审不通过", "审核不通过"]);
const ISSUED = new Set(["已出证", "已出证待升级"]);
const POLITICAL = ["中共党员", "中共预备党员", "共青团员", "民革党员", "民盟盟员", "民建会员", "民进会员", "农工党党员",
  "致公党党员", "九三学社社员", "台盟盟员", "无党派人士", "群众"];
const EDUCATION = ["博士研究生", "硕士研究生", "本科", "大专", "中专", "高中", "初中及以下"];
const UNIT_CATEGORIES = ["社会工作服务机构", "社会团体", "基金会", "党政机关", "事业单位", "村(居)委会", "企业", "其他"];
const HONOUR_LEVELS = ["村(居)", "街道(乡镇)", "区(县)", "地市", "省", "部"];
const LEVELS = ["助理社会工作师", "社会工作师", "高级社会工作师"];
const PHOTO_MAX = 500 * 1024;
const COMMITMENT = "本人承诺：所填写的信息及提交的材料真实、准确、完整，如有虚假，愿承担相应责任。";

export function show(html) {
  main.innerHTML = html;
  const heading = main.querySelector("h1");
  if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
}
const go = (hash) => { if (location.hash === hash) route(); else location.hash = hash; };
const person = () => api.currentUser()?.subject;

function drawNav(user) {
  const links = !user ? [["#/login", "登录"], ["#/register", "注册"], ["#/feedback", "反馈"]]
    : user.role === "social_worker" ? [["#/home", "首页"], ["#/profile", "个人信息表"], ["#/check", "系统校验"],
      ["#/applications", "我的申请"]]
    : staffHome(user.role);
  nav.innerHTML = links.map(([href, text]) => `<a href="${href}">${text}</a>`).join("") +
    (user ? `<button type="button" id="logout" class="link">退出</button>` : "");
  nav.querySelector("#logout")?.addEventListener("click", async () => { await api.logout(); go("#/login"); });
}
api.onSessionChange(drawNav);

function landing(role) {
  return role === "social_worker" ? "#/home" : role === "officer" ? "#/review" : "#/admin";
}

// ---- 登录, 找回密码, 邮箱验证 ------------------------------------------------------------------

function loginScreen() {
  show(`<h1>登录</h1><form id="login" novalidate>${formError}
    ${field({ name: "login", label: "身份证号或电子邮箱", attrs: 'autocomplete="username"' })}
    ${field({ name: "password", label: "密码", kind: "password", attrs: 'autocomplete="current-password"' })}
    <button type="submit">登录</button></form>
    <p><a href="#/reset">忘记密码？</a> · 还没有账号？<a href="#/register">注册</a> · 社工库查无此人？<a href="#/feedback">提交反馈</a></p>`);
  const form = main.querySelector("#login");
  guard(form, async (data) => {
    const user = await api.login(data.get("login").trim(), data.get("password"));
    go(landing(user.role));
  });
}

function resetScreen() {
  show(`<h1>找回密码</h1>
    <form id="reset-start" novalidate>${formError}
    ${field({ name: "login", label: "身份证号或电子邮箱", hint: "验证码将寄至账号已验证的邮箱" })}
    <button type="submit">发送验证码</button></form><p id="reset-sent" class="notice" hidden></p>
    <form id="reset-confirm" novalidate hidden>${formError}
    ${field({ name: "code", label: "邮件验证码", attrs: 'inputmode="numeric" autocomplete="one-time-code"' })}
    ${field({ name: "new_password", label: "新密码", kind: "password", hint: PASSWORD_RULE, attrs: 'autocomplete="new-password"' })}
    <button type="submit">设置新密码</button></form>`);
  const start = main.querySelector("#reset-start"), confirm = main.querySelector("#reset-confirm");
  guard(start, async (data) => {
    const answer = await api.post("/password-resets", { login: data.get("login").trim() });
    const sent = main.querySelector("#reset-sent");
    sent.textContent = answer.message; sent.hidden = false; confirm.hidden = false;
  });
  guard(confirm, async (data) => {
    await api.post("/password-resets/confirm", { login: start.login.value.trim(), code: data.get("code").trim(),
                                                 new_password: data.get("new_password") });
    show(`<h1>密码已重置</h1><p class="notice ok">请用新密码<a href="#/login">登录</a>。</p>`);
  }, { login: "code" });
}

const PASSWORD_RULE = "至少 8 位，含大写字母、小写字母、数字、符号中的至少三类；不能含身份证号或出生日期，不能过于常见";

async function verifyEmailScreen() {
  const me = await api.get(`/persons/${person()}`);
  show(`<h1>邮箱验证</h1>${me.email_confirmed ? `<p class="notice ok">邮箱 ${esc(me.email)} 已验证。</p>` : ""}
    <p>验证码已寄至 ${esc(me.email)}。</p>
    <form id="confirm" novalidate>${formError}
    ${field({ name: "code", label: "邮箱验证码", hint: "6 位数字", attrs: 'inputmode="numeric" autocomplete="one-time-code"' })}
    <button type="submit">验证</button> <button type="submit" name="again" value="1" class="secondary" formnovalidate>重新发送验证码</button>
    </form><p id="resent" class="notice" hidden></p>`);
  guard(main.querySelector("#confirm"), async (data, button) => {
    if (button && button.name === "again") {
      const answer = await api.post("/me/email/confirmation-code");
      const node = main.querySelector("#resent"); node.textContent = answer.message; node.hidden = false;
      return;
    }
    const answer = await api.post("/me/email/confirmation", { code: data.get("code").trim() });
    show(`<h1>邮箱已验证</h1><p class="notice ok">${esc(answer.email)} 已验证。下一步：<a href="#/profile">填写个人信息表</a>。</p>`);
  });
}

// ---- 注册 ------------------------------------------------------------------------------------

function registerScreen() {
  show(`<h1>注册</h1><p>第一步：填写姓名和身份证号，系统核对社会工作者职业水平证书库（社工库）。</p>
    <form id="check" novalidate>${formError}
    ${field({ name: "name", label: "姓名", value: carried.name, attrs: 'autocomplete="name"' })}
    ${field({ name: "id_number", label: "身份证号", value: carried.id_number, hint: "18 位，最后一位可为 X",
              attrs: 'autocomplete="off" maxlength="18" spellcheck="false"' })}
    <button type="submit">核对社工库</button></form>
    <section id="passer" class="card" hidden aria-live="polite"></section>
    <form id="signup" novalidate hidden>${formError}
    <h2>第二步：设置登录信息</h2>
    ${field({ name: "email", label: "电子邮箱", kind: "email", hint: "用于接收验证码和审核结果", attrs: 'autocomplete="email"' })}
    ${field({ name: "password", label: "密码", kind: "password", hint: PASSWORD_RULE, attrs: 'autocomplete="new-password"' })}
    <button type="submit">注册</button></form>`);
  const check = main.querySelector("#check"), signup = main.querySelector("#signup");
  const idInput = check.id_number;
  const live = () => {   // checked as it is typed, once there are 18 characters, and on leaving
    const wrapper = idInput.closest(".field");
    const problem = idInput.value.trim().length >= 18 || document.activeElement !== idInput ? idNumberProblem(idInput.value) : null;
    wrapper.querySelector(".error").textContent = idInput.value && problem ? problem : "";
    if (idInput.value && problem) idInput.setAttribute("aria-invalid", "true"); else idInput.removeAttribute("aria-invalid");
  };
  idInput.addEventListener("input", live);
  idInput.addEventListener("blur", live);
  guard(check, async (data) => {
    const problem = idNumberProblem(data.get("id_number"));
    if (problem) { setFieldError(check, "id_number", problem); idInput.focus(); return; }
    const passer = main.querySelector("#passer");
    try {
      const found = await api.post("/passers/check", { name: data.get("name").trim(), id_number: data.get("id_number").trim() });
      passer.innerHTML = `<h2>社工库核对通过</h2><dl><dt>职业水平</dt><dd id="level">${esc(found.level)}</dd>
        <dt>职业水平证书管理号</dt><dd id="management-number">${esc(found.management_number)}</dd>
        <dt>考试年度</dt><dd>${esc(found.exam_year)}</dd></dl>`;
      passer.hidden = false; signup.hidden = false; signup.email.focus();
    } catch (error) {
      if (error.code !== "PASSER_NOT_FOUND") throw error;
      carried.name = data.get("name").trim(); carried.id_number = data.get("id_number").trim();
      passer.innerHTML = `<h2>社工库中未找到</h2><p>${esc(error.message)}</p>
        <p>如确已取得职业水平证书，请<a href="#/feedback" id="to-feedback">提交反馈</a>，审核通过后会以邮件通知您注册。</p>`;
      passer.hidden = false; signup.hidden = true;
      setFieldError(check, "id_number", error.message);
    }
  });
  guard(signup, async (data) => {
    const body = { name: check.name.value.trim(), id_number: check.id_number.value.trim(),
                   email: data.get("email").trim(), password: data.get("password") };
    try {
      await api.post("/accounts", body);
    } catch (error) {
      if (["name", "id_number"].includes(error.field)) { setFieldError(check, error.field, error.message); return; }
      throw error;
    }
    await api.login(body.id_number, body.password);
    go("#/verify-email");
  });
}

// ---- 反馈 ------------------------------------------------------------------------------------

function readBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",")[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function feedbackScreen() {
  show(`<h1>反馈：社工库查无此人</h1><p>已取得职业水平证书但注册时查无此人，请填写以下信息并上传证书照片或扫描件，审核结果将寄至您的邮箱。</p>
    <form id="feedback" novalidate>${formError}
    ${field({ name: "name", label: "姓名", value: carried.name })}
    ${field({ name: "id_number", label: "身份证号", value: carried.id_number, attrs: 'maxlength="18" autocomplete="off"' })}
    ${field({ name: "email", label: "电子邮箱", kind: "email" })}
    ${field({ name: "level", label: "职业水平", kind: "select", options: LEVELS })}
    ${field({ name: "exam_year", label: "考试年度", kind: "number", attrs: 'inputmode="numeric" min="2008"' })}
    ${field({ name: "management_number", label: "职业水平证书管理号（选填）", required: false, attrs: 'inputmode="numeric"' })}
    ${field({ name: "region_code", label: "所在区县代码（选填，6 位）", required: false, attrs: 'inputmode="numeric" maxlength="6"' })}
    ${field({ name: "note", label: "说明（选填）", kind: "textarea", required: false })}
    ${field({ name: "proof", label: "证明材料（选填）", kind: "file", hint: "证书照片或扫描件：PDF、JPEG 或 PNG，不超过 5 MB",
              attrs: 'accept="application/pdf,image/jpeg,image/png"' })}
    <button type="submit">提交反馈</button></form>
    <p>已提交过反馈？<a href="#/feedback-status">查询处理结果</a></p>`);
  const form = main.querySelector("#feedback");
  guard(form, async (data) => {
    const body = values(data, ["name", "id_number", "email", "level", "management_number", "region_code", "note"]);
    if (data.get("exam_year")) body.exam_year = Number(data.get("exam_year"));
    const file = form.proof.files[0];
    if (file) {
      if (file.size > 5 * 1024 * 1024) { setFieldError(form, "proof", "证明材料不能超过 5 MB"); return; }
      body.proof = { filename: file.name, content_type: file.type || "application/octet-stream",
                     content_base64: await readBase64(file) };
    }
    const receipt = await api.post("/feedback", body);
    sessionStorage.setItem(FEEDBACK_KEY, receipt.feedback_id);
    followed.id_number = body.id_number;
    show(`<h1>反馈已提交</h1><div class="card" id="feedback-receipt"><dl><dt>反馈编号</dt><dd>${esc(receipt.feedback_id)}</dd>
      <dt>状态</dt><dd>待处理</dd><dt>提交时间</dt><dd>${esc(dateTime(receipt.submitted_at))}</dd></dl>
      <p>审核人员处理后，结果会寄至 ${esc(body.email)}；通过后即可<a href="#/register">注册</a>。</p>
      <p>请记下反馈编号。<a class="button" href="#/feedback-status">查询处理结果</a></p></div>`);
  }, { "proof.content_base64": "proof", "proof.content_type": "proof", "proof.filename": "proof" });
}

const FEEDBACK_STATUS = { pending: "待处理", approved: "已通过", rejected: "未通过" };

function feedbackStatusScreen() {
  show(`<h1>反馈处理结果</h1><p>凭反馈编号和提交反馈时填写的身份证号查询。</p>
    <form id="feedback-lookup" novalidate>${formError}
    ${field({ name: "feedback_id", label: "反馈编号", value: sessionStorage.getItem(FEEDBACK_KEY) || "",
              attrs: 'autocomplete="off" spellcheck="false"' })}
    ${field({ name: "id_number", label: "身份证号", value: followed.id_number, attrs: 'maxlength="18" autocomplete="off" spellcheck="false"' })}
    <button type="submit">查询</button></form>
    <section id="feedback-status" class="card" hidden aria-live="polite"></section>`);
  const form = main.querySelector("#feedback-lookup");
  guard(form, async (data) => {
    const request = { feedback_id: data.get("feedback_id").trim(), id_number: data.get("id_number").trim() };
    const problem = idNumberProblem(request.id_number);
    if (problem) { setFieldError(form, "id_number", problem); form.id_number.focus(); return; }
    const answer = await api.post("/feedback/status-lookups", request);
    sessionStorage.setItem(FEEDBACK_KEY, answer.feedback_id);
    followed.id_number = request.id_number;
    const box = main.querySelector("#feedback-status");
    box.innerHTML = `<dl><dt>状态</dt><dd id="feedback-state">${esc(FEEDBACK_STATUS[answer.status])}</dd>
      <dt>提交时间</dt><dd>${esc(dateTime(answer.submitted_at))}</dd>
      ${answer.decided_at ? `<dt>处理时间</dt><dd>${esc(dateTime(answer.decided_at))}</dd>` : ""}
      ${answer.reason ? `<dt>未通过理由</dt><dd>${esc(answer.reason)}</dd>` : ""}</dl>
      <p>${{ pending: "审核人员尚未处理，处理后结果也会寄至您的邮箱。",
             approved: `您的信息已加入社工库，请<a href="#/register">注册</a>。`,
             rejected: "如有新的证明材料，可重新<a href=\"#/feedback\">提交反馈</a>。" }[answer.status]}</p>`;
    box.hidden = false;
  });
}

// ---- 首页, 我的申请 ----------------------------------------------------------------------------

async function homeScreen() {
  const [me, standing, apps] = await Promise.all([api.get(`/persons/${person()}`), api.get("/me/registration"),
                                                 api.get("/me/applications")]);
  const actions = { first_registration: ["#/apply/first", "首次登记"], re_registration: ["#/apply/re", "再登记"],
                    replacement: ["#/apply/replacement", "更换电子证"], upgrade: ["#/apply/upgrade", "升级换发"] };
  show(`<h1>您好，${esc(me.name)}</h1>
    <div class="card"><dl><dt>职业水平</dt><dd>${esc(me.level)}</dd><dt>职业水平证书管理号</dt><dd>${esc(me.management_number)}</dd>
    <dt>电子邮箱</dt><dd>${esc(me.email)} ${me.email_confirmed ? "（已验证）" : `（未验证，<a href="#/verify-email">去验证</a>）`}</dd>
    ${standing.certificate ? `<dt>当前证书</dt><dd>${esc(standing.certificate.certificate_number)}，有效期至 ${esc(standing.certificate.valid_until)}</dd>` : ""}
    </dl><p class="notice">${esc(standing.advice)}</p>
    <p class="actions">${standing.can_apply_for.map((kind) => `<a class="button" href="${actions[kind][0]}">${actions[kind][1]}</a>`).join(" ")}</p></div>
    <h2>我的申请</h2>${applicationTable(apps.items)}
    <p><a href="#/profile">个人信息表</a> · <a href="#/check">系统校验</a></p>`);
}

function applicationTable(items) {
  if (!items.length) return `<p>尚无申请。</p>`;
  return `<div class="scroll"><table><thead><tr><th scope="col">类型</th><th scope="col">状态</th><th scope="col">提交时间</th><th scope="col">操作</th></tr></thead><tbody>` +
    items.map((a) => `<tr><td>${esc(KIND[a.kind])}</td><td><span class="status">${esc(a.status_text || a.status)}</span></td>
      <td>${esc(dateTime(a.submitted_at))}</td><td><a href="#/application/${esc(a.application_id)}">查看</a>
      ${ISSUED.has(a.status) ? ` · <a href="#/certificate/${esc(a.application_id)}">查看证书</a>` : ""}</td></tr>`).join("") +
    `</tbody></table></div>`;
}

async function applicationsScreen() {
  const apps = await api.get("/me/applications");
  show(`<h1>我的申请</h1>${applicationTable(apps.items)}`);
}

// ---- 个人信息表 ------------------------------------------------------------------------------

async function uploadFile(purpose, file) {
  const ticket = await api.post("/me/uploads", { purpose });
  await api.postToStorage(ticket, file);
  return ticket.upload_id;
}

async function profileScreen(params) {
  const p = await api.get(`/persons/${person()}/profile`).catch(async (error) => {
    // No 个人信息表 yet (it starts with the first save): the account's facts, the rest empty.
    if (error.code !== "NOT_FOUND") throw error;
    const me = await api.get(`/persons/${person()}`);
    return { name: me.name, id_number_masked: me.id_number.replace(/^(.{4}).+(.{4})$/, "$1**********$2"), gender: "",
             birth_date: "", level: me.level, management_number: me.management_number, work_experiences: [], honours: [] };
  });
  const photoUrl = p.photo ? (await api.get(`/persons/${person()}/files`, { file_key: p.photo.photo_key }).catch(() => null))?.url : null;
  show(`<h1>个人信息表</h1>
    <section class="card"><h2>基本信息（不可修改）</h2><dl><dt>姓名</dt><dd>${esc(p.name)}</dd><dt>身份证号</dt><dd>${esc(p.id_number_masked)}</dd>
      <dt>性别</dt><dd>${esc(p.gender)}</dd><dt>出生日期</dt><dd>${esc(p.birth_date)}</dd><dt>职业水平</dt><dd>${esc(p.level)}</dd>
      <dt>职业水平证书管理号</dt><dd>${esc(p.management_number)}</dd></dl></section>

    <form id="photo-form" class="card" novalidate>${formError}<h2>照片</h2>
      <p class="rules" id="photo-rules">上传前请确认：一寸（295×413 像素）或二寸（413×579 像素）证件照，JPEG 或 PNG，不超过 500 KB。</p>
      <img id="photo-preview" alt="照片预览" ${photoUrl ? `src="${esc(photoUrl)}"` : "hidden"}>
      ${p.photo ? `<p id="photo-saved" class="notice ok">已上传：${esc(p.photo.photo_size)}，${esc(p.photo.width)}×${esc(p.photo.height)}</p>` : ""}
      ${field({ name: "photo", label: "选择照片", kind: "file", hint: "选择后可预览，确认无误再上传", attrs: 'accept="image/jpeg,image/png"' })}
      <button type="submit">上传照片</button></form>

    <form id="basic-form" class="card" novalidate>${formError}<h2>基础信息</h2>
      ${field({ name: "ethnicity", label: "民族", value: p.ethnicity, hint: "如：汉族" })}
      ${field({ name: "political_status", label: "政治面貌", kind: "select", options: POLITICAL, value: p.political_status })}
      ${field({ name: "education", label: "学历", kind: "select", options: EDUCATION, value: p.education })}
      ${field({ name: "major", label: "所学专业", value: p.major })}
      ${field({ name: "mobile", label: "手机号码", kind: "tel", value: p.mobile, attrs: 'inputmode="numeric" maxlength="11" autocomplete="tel"' })}
      ${field({ name: "email", label: "电子邮箱（选填）", kind: "email", value: p.email, required: false })}
      ${field({ name: "address", label: "通讯地址", value: p.address })}
      ${field({ name: "region_code", label: "登记区域（区县代码，6 位）", value: p.region_code, hint: "如：110105（北京市朝阳区）", attrs: 'inputmode="numeric" maxlength="6"' })}
      ${field({ name: "unit_category", label: "单位类别", kind: "select", options: UNIT_CATEGORIES, value: p.unit_category })}
      ${directoryField("basic", p.unit_category === "社会工作服务机构" ? p.unit_name : "", p.unit_directory_id)}
      <div class="unit-free">${field({ name: "unit_name", label: "单位名称", value: p.unit_category !== "社会工作服务机构" ? p.unit_name : "", required: false })}</div>
      ${field({ name: "position", label: "职务", value: p.position })}
      ${field({ name: "truth_commitment", label: "本人承诺以上信息真实有效", kind: "checkbox", value: !!p.truth_committed_at })}
      <button type="submit">保存基础信息</button></form>

    <section class="card" id="work"><h2>工作经历</h2>${p.work_experiences.map((w) => `<div class="row" data-field="work_experiences.${esc(w.experience_id)}">
      <p><strong>${esc(w.unit_name)}</strong> ${esc(w.position)}，${esc(w.start_date)} 至 ${esc(w.end_date || "今")}
      ${w.sanqu_programme ? "<span class=tag>三区计划</span>" : ""}${w.qianshou_programme ? "<span class=tag>牵手计划</span>" : ""}
      （证明材料 ${w.proof_keys.length} 份）</p>
      <button type="button" class="secondary" data-delete-work="${esc(w.experience_id)}">删除</button></div>`).join("") || "<p>尚未填写。</p>"}
      <form id="work-form" novalidate>${formError}<h3>新增工作经历</h3>
      ${field({ name: "unit_category", label: "单位类别", kind: "select", options: UNIT_CATEGORIES })}
      ${directoryField("work", "", "")}
      <div class="unit-free">${field({ name: "unit_name", label: "单位名称", required: false })}</div>
      ${field({ name: "position", label: "职务" })}
      ${field({ name: "start_date", label: "开始日期", kind: "date" })}
      ${field({ name: "end_date", label: "结束日期（至今可不填）", kind: "date", required: false })}
      ${field({ name: "description", label: "工作描述（选填）", kind: "textarea", required: false })}
      ${field({ name: "sanqu_programme", label: "参与三区计划", kind: "checkbox", hint: "参与三区计划或牵手计划的，须上传证明材料" })}
      ${field({ name: "qianshou_programme", label: "参与牵手计划", kind: "checkbox" })}
      ${field({ name: "proof_upload_ids", label: "证明材料", kind: "file", required: false, hint: "PDF、JPEG 或 PNG，每份不超过 5 MB，可多选",
                attrs: 'accept="application/pdf,image/jpeg,image/png" multiple' })}
      <button type="submit">保存工作经历</button></form></section>

    <section class="card" id="honours"><h2>个人荣誉</h2>${p.honours.map((h) => `<div class="row"><p><strong>${esc(h.title)}</strong>（${esc(h.level)}级），${esc(h.awarding_body)}，${esc(h.awarded_on)}</p>
      <button type="button" class="secondary" data-delete-honour="${esc(h.honour_id)}">删除</button></div>`).join("") || "<p>尚未填写（选填）。</p>"}
      <form id="honour-form" novalidate>${formError}<h3>新增荣誉</h3>
      ${field({ name: "title", label: "荣誉名称" })}
      ${field({ name: "level", label: "荣誉等级", kind: "select", options: HONOUR_LEVELS })}
      ${field({ name: "awarding_body", label: "授予单位" })}
      ${field({ name: "awarded_on", label: "获得日期", kind: "date" })}
      ${field({ name: "proof_upload_id", label: "证明材料（选填）", kind: "file", required: false, attrs: 'accept="application/pdf,image/jpeg,image/png"' })}
      <button type="submit">保存荣誉</button></form></section>
    <p><a class="button" href="#/check">系统校验</a></p>`);

  // photo: preview and the rules checked before anything is sent; the server's refusal at the field
  const photoForm = main.querySelector("#photo-form");
  const preview = main.querySelector("#photo-preview");
  preview.addEventListener("error", () => { preview.hidden = true; });   // not an image: no broken icon
  photoForm.photo.addEventListener("change", () => {
    clearErrors(photoForm);
    const file = photoForm.photo.files[0];
    if (!file) return;
    preview.src = URL.createObjectURL(file); preview.hidden = false;
    const problem = photoProblem(file);
    if (problem) setFieldError(photoForm, "photo", problem);
  });
  guard(photoForm, async () => {
    const file = photoForm.photo.files[0];
    if (!file) { setFieldError(photoForm, "photo", "请选择照片"); return; }
    const problem = photoProblem(file);
    if (problem) { setFieldError(photoForm, "photo", problem); photoForm.photo.focus(); return; }
    const uploadId = await uploadFile("photo", file);
    const saved = await api.put("/me/profile/photo", { upload_id: uploadId });
    const note = photoForm.querySelector("#photo-saved") || Object.assign(document.createElement("p"), { id: "photo-saved", className: "notice ok" });
    note.textContent = `已上传：${saved.photo.photo_size}，${saved.photo.width}×${saved.photo.height}`;
    preview.after(note);
  }, { upload_id: "photo", file: "photo", photo_key: "photo" });

  // basic info, with the directory search for 社会工作服务机构 and free text for the others
  const basic = main.querySelector("#basic-form");
  wireDirectory(basic);
  guard(basic, async (data) => {
    const body = values(data, ["ethnicity", "political_status", "education", "major", "mobile", "email", "address",
                               "region_code", "unit_category", "position"]);
    if (body.unit_category === "社会工作服务机构") body.unit_directory_id = data.get("unit_directory_id") || undefined;
    else if (data.get("unit_name")) body.unit_name = data.get("unit_name").trim();
    body.truth_commitment = basic.truth_commitment.checked;
    await api.put("/me/profile/basic-info", body);
    route();
  });

  const work = main.querySelector("#work-form");
  wireDirectory(work, basic);
  guard(work, async (data) => {
    const body = values(data, ["unit_category", "position", "start_date", "end_date", "description"]);
    if (body.unit_category === "社会工作服务机构") body.unit_directory_id = data.get("unit_directory_id") || undefined;
    else if (data.get("unit_name")) body.unit_name = data.get("unit_name").trim();
    body.sanqu_programme = work.sanqu_programme.checked; body.qianshou_programme = work.qianshou_programme.checked;
    body.proof_upload_ids = [];
    for (const file of work.proof_upload_ids.files) body.proof_upload_ids.push(await uploadFile("proof", file));
    await api.post("/me/profile/work-experiences", body);
    route();
  }, { proof_keys: "proof_upload_ids" });
  const honour = main.querySelector("#honour-form");
  guard(honour, async (data) => {
    const body = values(data, ["title", "level", "awarding_body", "awarded_on"]);
    const file = honour.proof_upload_id.files[0];
    if (file) body.proof_upload_id = await uploadFile("proof", file);
    await api.post("/me/profile/honours", body);
    route();
  }, { proof_key: "proof_upload_id" });
  main.addEventListener("click", async (event) => {
    const target = event.target;
    if (target.dataset.deleteWork) { target.disabled = true; await api.del(`/me/profile/work-experiences/${target.dataset.deleteWork}`); route(); }
    if (target.dataset.deleteHonour) { target.disabled = true; await api.del(`/me/profile/honours/${target.dataset.deleteHonour}`); route(); }
  });

  if (params.get("focus")) focusField(params.get("focus"));
}

// 单位类别: a 社会工作服务机构 is chosen from the directory (searched by name, in the region
// typed on the basic form); any other category is typed as free text.
function directoryField(prefix, name, directoryId) {
  return `<div class="field directory" data-field="unit_directory_id">
    <label for="${prefix}-org-search">查找社会工作服务机构（名录）</label>
    <div class="inline"><input id="${prefix}-org-search" type="search" class="org-search" aria-describedby="${prefix}-org-hint ${prefix}-org-error" value="${esc(name || "")}">
    <button type="button" class="secondary org-go">查找</button></div>
    <p class="hint" id="${prefix}-org-hint">输入机构名称中至少两个字，再从结果中选择</p>
    <input type="hidden" name="unit_directory_id" value="${esc(directoryId || "")}">
    <div class="org-results" role="group" aria-label="查找结果"></div>
    <p class="error" id="${prefix}-org-error" aria-live="polite"></p></div>`;
}

function wireDirectory(form, regionForm = form) {
  const block = form.querySelector(".directory"), free = form.querySelector(".unit-free");
  const results = block.querySelector(".org-results"), error = block.querySelector(".error");
  const toggle = () => {
    const directory = form.unit_category.value === "社会工作服务机构";
    block.hidden = !directory; free.hidden = directory;
  };
  form.unit_category.addEventListener("change", toggle); toggle();
  const search = async () => {
    const region = regionForm.region_code.value;
    try {
      const page = await api.get("/organisations", { name: block.querySelector(".org-search").value.trim(),
                                                     region_code: /^\d{6}$/.test(region) ? region : "" });
      results.innerHTML = page.items.length ? page.items.map((o) => `<label class="choice"><input type="radio" name="org" value="${esc(o.org_id)}"
        ${o.org_id === form.unit_directory_id.value ? "checked" : ""}> ${esc(o.name)}（${esc(o.credit_code)}）</label>`).join("") : "<p>未找到，请换个名称再试。</p>";
      error.textContent = "";
    } catch (failure) { error.textContent = failure.message; }
  };
  block.querySelector(".org-go").addEventListener("click", search);
  block.querySelector(".org-search").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); search(); } });
  results.addEventListener("change", (e) => { form.unit_directory_id.value = e.target.value; });
}

function photoProblem(file) {
  if (!["image/jpeg", "image/png"].includes(file.type)) return "照片须为 JPEG 或 PNG 格式";
  if (file.size > PHOTO_MAX) return `照片不能超过 500 KB（所选文件 ${Math.ceil(file.size / 1024)} KB）`;
  return null;
}

function focusField(name) {
  const candidates = [name, name.split(".").slice(0, 2).join("."), name.split(".")[0]];
  for (const candidate of candidates) {
    const wrapper = main.querySelector(`[data-field="${CSS.escape(candidate)}"]`);
    if (!wrapper) continue;
    wrapper.classList.add("attention");
    wrapper.scrollIntoView({ block: "center" });
    (wrapper.querySelector("input:not([type=hidden]), select, textarea, button") || wrapper).focus();
    return;
  }
  const section = { work_experiences: "#work", honours: "#honours", photo: "#photo-form" }[name.split(".")[0]];
  main.querySelector(section || "#basic-form")?.querySelector("input, select, button")?.focus();
}

// ---- 系统校验 --------------------------------------------------------------------------------

async function checkScreen() {
  const result = await api.get(`/persons/${person()}/profile/completeness`);
  show(`<h1>系统校验</h1>${result.complete
    ? `<p class="notice ok" id="check-result">个人信息表已填写完整，可以办理登记。</p><p><a class="button" href="#/home">去办理</a></p>`
    : `<p class="notice error" id="check-result">以下 ${result.items.length} 项需要补充或修改，点击即可前往填写：</p>
       <ul class="missing">${result.items.map((item) => `<li><a href="#/profile?focus=${encodeURIComponent(item.field)}">${esc(item.label)}</a>：${esc(item.message)}</li>`).join("")}</ul>`}`);
}

// ---- 首次登记, 再登记, 更换电子证, 升级 ------------------------------------------------------------

const commitmentField = () => field({ name: "commitment", label: "我已阅读并同意以下承诺声明", kind: "checkbox", hint: COMMITMENT });

async function firstRegistrationScreen() {
  show(`<h1>首次登记</h1><p>提交前请先在<a href="#/check">系统校验</a>中确认个人信息表完整。提交后由所在区县民政部门初审、省级民政部门终审。</p>
    <form id="apply" novalidate>${formError}${commitmentField()}<button type="submit">提交首次登记</button></form>`);
  guard(main.querySelector("#apply"), async (data, button) => {
    const application = await api.post("/me/applications/first-registration", { commitment: main.querySelector("#apply").commitment.checked });
    go(`#/application/${application.application_id}`);
  });
}

async function upgradeScreen() {
  show(`<h1>升级换发</h1><p>已取得更高职业水平的，申请换发新等级的电子证书。</p>
    <form id="apply" novalidate>${formError}${commitmentField()}<button type="submit">提交申请</button></form>`);
  guard(main.querySelector("#apply"), async () => {
    const application = await api.post("/me/applications/upgrade", { commitment: main.querySelector("#apply").commitment.checked });
    go(`#/application/${application.application_id}`);
  });
}

async function reRegistrationScreen() {
  const draft = await api.post("/me/drafts", { kind: "re_registration" });
  const education = draft.form?.continuing_education;
  const courses = (education?.offline_courses || []).map((c) => ({ ...c }));
  show(`<h1>再登记</h1>
    <section class="card"><h2>继续教育学时</h2>${education ? `<p>统计期间 ${esc(education.period_from)} 至 ${esc(education.period_until)}，
      须完成 <strong>${esc(education.required_hours)}</strong> 学时。</p>
      <h3>线上学时（由学习平台提供，不可修改）：<span id="online-hours">${esc(education.online_hours)}</span></h3>
      ${education.online_records.length ? `<div class="scroll"><table><thead><tr><th scope="col">课程</th><th scope="col">提供方</th><th scope="col">学时</th><th scope="col">完成日期</th></tr></thead><tbody>
        ${education.online_records.map((r) => `<tr><td>${esc(r.course)}</td><td>${esc(r.provider)}</td><td>${esc(r.hours)}</td><td>${esc(r.completed_on)}</td></tr>`).join("")}</tbody></table></div>` : "<p>暂无线上学习记录。</p>"}`
      : "<p>继续教育信息暂不可用。</p>"}
      <h3>线下学时（本人填写，须上传证明）</h3><div id="courses"></div>
      <form id="course-form" novalidate>${formError}<h4>添加线下课程</h4>
      ${field({ name: "institution", label: "培训机构" })}
      ${field({ name: "course", label: "课程名称" })}
      ${field({ name: "start_date", label: "开始日期", kind: "date" })}
      ${field({ name: "end_date", label: "结束日期", kind: "date" })}
      ${field({ name: "hours", label: "学时", kind: "number", attrs: 'step="0.1" min="0.1" inputmode="decimal"' })}
      ${field({ name: "proof_key", label: "证明材料", kind: "file", hint: "结业证书等：PDF、JPEG 或 PNG", attrs: 'accept="application/pdf,image/jpeg,image/png"' })}
      <button type="submit" class="secondary">添加课程</button></form></section>
    <form id="apply" class="card" novalidate>${formError}<div data-field="offline_courses"><p class="error" aria-live="polite"></p></div>
      ${commitmentField()}<button type="submit">提交再登记</button></form>`);
  const list = main.querySelector("#courses");
  const draw = () => {
    list.innerHTML = courses.length ? `<ul>${courses.map((c, i) => `<li data-field="offline_courses.${i}">${esc(c.institution)} · ${esc(c.course)} · ${esc(c.start_date)}–${esc(c.end_date)} ·
      ${esc(c.hours)} 学时 <button type="button" class="link" data-remove="${i}">删除</button><span class="error" aria-live="polite"></span></li>`).join("")}</ul>` : "<p>尚未添加线下课程。</p>";
  };
  draw();
  list.addEventListener("click", (e) => { if (e.target.dataset.remove) { courses.splice(+e.target.dataset.remove, 1); draw(); } });
  const courseForm = main.querySelector("#course-form");
  guard(courseForm, async (data) => {
    const file = courseForm.proof_key.files[0];
    if (!file) { setFieldError(courseForm, "proof_key", "请上传证明材料"); return; }
    const course = values(data, ["institution", "course", "start_date", "end_date"]);
    course.hours = Number(data.get("hours"));
    if (!(course.hours > 0)) { setFieldError(courseForm, "hours", "请填写学时（大于 0）"); return; }
    const ticket = await api.post("/me/proof-uploads", { filename: file.name, content_type: file.type || "application/pdf" });
    await api.postToStorage(ticket, file);
    const proof = await api.post("/me/proof-uploads/confirmation", { proof_key: ticket.proof_key });
    courses.push({ ...course, proof_key: proof.proof_key });
    courseForm.reset(); draw();
  }, { filename: "proof_key", content_type: "proof_key", file: "proof_key" });
  const apply = main.querySelector("#apply");
  guard(apply, async () => {
    const application = await api.post("/me/applications/re-registration", {
      application_id: draft.application_id, offline_courses: courses.map(({ institution, course, start_date, end_date, hours, proof_key }) =>
        ({ institution, course, start_date, end_date, hours, proof_key })), commitment: apply.commitment.checked });
    go(`#/application/${application.application_id}`);
  });
}

async function replacementScreen() {
  show(`<h1>更换电子证</h1><p>持纸质登记证书的，可申请更换为电子证书。请按纸质证书填写。</p>
    <form id="apply" novalidate>${formError}
    ${field({ name: "original_certificate_no", label: "证书编号（NO.）", hint: "纸质证书第一页底部的 8 位数字", attrs: 'inputmode="numeric" maxlength="8"' })}
    ${field({ name: "registration_type", label: "登记类型", kind: "select", options: ["首次登记", "再登记"] })}
    ${field({ name: "valid_from", label: "登记有效期起", kind: "date" })}
    ${field({ name: "valid_until", label: "登记有效期止", kind: "date" })}
    ${commitmentField()}<button type="submit">提交更换申请</button></form>`);
  const form = main.querySelector("#apply");
  guard(form, async (data) => {
    const body = values(data, ["original_certificate_no", "registration_type", "valid_from", "valid_until"]);
    body.commitment = form.commitment.checked;
    const application = await api.post("/me/applications/replacement", body);
    go(`#/application/${application.application_id}`);
  });
}

// ---- 申请状态, 修改后重新提交, 历史 -----------------------------------------------------------

async function applicationScreen(params, id) {
  const a = await api.get(`/applications/${id}`);
  const rejected = REJECTED.has(a.status);
  show(`<h1>${esc(KIND[a.kind])}</h1>
    <div class="card"><p>当前状态：<strong class="status" id="status">${esc(a.status_text || a.status)}</strong></p>
    <ol class="states" aria-label="办理状态">${STATUSES.map((s) => `<li${s === a.status ? ' aria-current="step" class="current"' : ""}>${s}</li>`).join("")}</ol>
    ${a.rejection_reason ? `<p class="notice error" id="rejection">审核意见：${esc(a.rejection_reason)}</p>` : ""}
    ${a.certificate_number ? `<p>证书编号：${esc(a.certificate_number)}</p>` : ""}
    ${ISSUED.has(a.status) ? `<p><a class="button" href="#/certificate/${esc(a.application_id)}">查看证书</a></p>` : ""}</div>
    ${rejected ? `<section class="card"><h2>修改后重新提交</h2><p>请按审核意见修改<a href="#/profile">个人信息表</a>，再<a href="#/check">系统校验</a>，然后重新提交。</p>
      <form id="resubmit" novalidate>${formError}${commitmentField()}<button type="submit">重新提交</button></form></section>` : ""}
    ${a.status === "未登记" ? `<section class="card"><h2>草稿</h2><form id="resubmit" novalidate>${formError}${commitmentField()}<button type="submit">提交</button></form></section>` : ""}
    <h2>办理记录</h2><div class="scroll"><table id="history"><thead><tr><th scope="col">时间</th><th scope="col">状态</th><th scope="col">办理人</th><th scope="col">意见</th></tr></thead><tbody>
    ${a.history.map((h) => `<tr><td>${esc(dateTime(h.at))}</td><td>${esc(h.status)}</td><td>${esc(actorName(h.actor))}</td><td>${esc(h.reason || "")}</td></tr>`).join("")}
    </tbody></table></div>`);
  const resubmit = main.querySelector("#resubmit");
  if (resubmit) guard(resubmit, async () => {
    await api.post(`/applications/${id}/submission`, { commitment: resubmit.commitment.checked });
    route();
  });
}

// The history names people by account id: the applicant is 本人, other accounts are staff, and
// services (identity, certificate) are the system.
function actorName(actor) {
  if (actor === person()) return "本人";
  return /^[0-9a-f-]{36}$/.test(actor) ? "审核人员" : "系统";
}

// ---- 查看证书 --------------------------------------------------------------------------------

const CERT_STATUS = { issued: "有效", suspended: "已暂停", revoked: "已撤销", expired: "已过期", superseded: "已换发" };

async function certificateScreen(params, id) {
  const c = await api.get(`/applications/${id}/certificate`);
  show(`<h1>查看证书</h1><div class="card" id="certificate"><dl>
    <dt>证书编号</dt><dd id="certificate-number">${esc(c.certificate_number)}</dd><dt>持证人</dt><dd>${esc(c.holder_name)}</dd>
    <dt>职业水平</dt><dd>${esc(c.level)}</dd><dt>发证机关</dt><dd>${esc(c.authority)}</dd>
    <dt>有效期</dt><dd>${esc(c.valid_from)} 至 ${esc(c.valid_until)}</dd>
    <dt>状态</dt><dd id="certificate-status">${esc(CERT_STATUS[c.status] || c.status)}${c.status_reason ? `（${esc(c.status_reason)}）` : ""}</dd>
    ${c.pending_upgrade_level ? `<dt>待升级</dt><dd>${esc(c.pending_upgrade_level)}</dd>` : ""}</dl>
    <p class="actions"><button type="button" id="download">下载证书（PDF）</button>
    ${c.verification_url ? `<a class="button secondary" id="verify-link" href="${esc(c.verification_url)}" rel="noreferrer">核验页面（证书二维码所含地址）</a>` : ""}</p>
    <p class="error" id="download-error" aria-live="polite"></p></div>`);
  const button = main.querySelector("#download");
  button.addEventListener("click", async () => {
    if (button.disabled) return;
    button.disabled = true;
    main.querySelector("#download-error").textContent = "";
    try {
      const fresh = await api.get(`/applications/${id}/certificate`);   // the link is short-lived: a new one
      const response = await fetch(fresh.download_url, { credentials: "omit" });
      if (!response.ok) throw new Error(String(response.status));
      const url = URL.createObjectURL(await response.blob());
      const link = Object.assign(document.createElement("a"), { href: url, download: `证书-${fresh.certificate_number}.pdf` });
      document.body.append(link); link.click(); link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (error) {
      main.querySelector("#download-error").textContent = error.message && error.code ? error.message : "下载失败，请稍后重试";
    } finally { button.disabled = false; }
  });
}

// ---- the router ------------------------------------------------------------------------------

const routes = [
  [/^\/login$/, loginScreen, null], [/^\/register$/, registerScreen, null], [/^\/feedback$/, feedbackScreen, null],
  [/^\/feedback-status$/, feedbackStatusScreen, null],
  [/^\/reset$/, resetScreen, null],
  [/^\/verify-email$/, verifyEmailScreen, "social_worker"], [/^\/home$/, homeScreen, "social_worker"],
  [/^\/applications$/, applicationsScreen, "social_worker"], [/^\/profile$/, profileScreen, "social_worker"],
  [/^\/check$/, checkScreen, "social_worker"], [/^\/apply\/first$/, firstRegistrationScreen, "social_worker"],
  [/^\/apply\/re$/, reRegistrationScreen, "social_worker"], [/^\/apply\/replacement$/, replacementScreen, "social_worker"],
  [/^\/apply\/upgrade$/, upgradeScreen, "social_worker"],
  [/^\/application\/([\w-]+)$/, applicationScreen, "social_worker"],
  [/^\/certificate\/([\w-]+)$/, certificateScreen, "social_worker"],
  ...staffRoutes,
];

// One screen drawn at a time: a hash change while a screen is still loading draws the newest
// hash after it (never an older screen over a newer one).
let running = null, again = false;
export async function route() {
  if (running) { again = true; return running; }
  running = (async () => { do { again = false; await drawScreen(); } while (again); })();
  try { await running; } finally { running = null; }
}

async function drawScreen() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const user = await api.resume();
  drawNav(user);
  if (path === "/" || path === "") return go(user ? landing(user.role) : "#/login");
  for (const [pattern, screen, role] of routes) {
    const match = pattern.exec(path);
    if (!match) continue;
    if (role && !user) return go("#/login");
    if (role && role !== "staff" && user.role !== role) return go(landing(user.role));
    if (role === "staff" && user.role === "social_worker") return go(landing(user.role));
    try {
      await screen(params, ...match.slice(1));
    } catch (error) {
      if (error.status === 401) return go("#/login");
      show(`<h1>出错了</h1><p class="notice error">${esc(error.message || "页面加载失败")}</p>
        ${error.requestId ? `<p>请求编号：${esc(error.requestId)}</p>` : ""}<p><a href="#/">返回首页</a></p>`);
    }
    return;
  }
  show(`<h1>页面不存在</h1><p><a href="#/">返回首页</a></p>`);
}

window.addEventListener("hashchange", route);
route();

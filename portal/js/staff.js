// Officers' and administrators' screens: the review queue, an item and its decision, batch
// approval, the deadline summary, 反馈 decisions, an item's audit trail.
import * as api from "./api.js";
import { esc, field, guard, formError, values, dateTime, KIND, STAGE, LEVEL, ITEM_STATUS, DEADLINE } from "./ui.js";
import { show } from "./app.js";

export function staffHome(role) {
  const links = [["#/review", "待审队列"], ["#/deadlines", "期限统计"], ["#/feedback-review", "反馈审核"], ["#/audit", "操作记录"]];
  return role === "admin" ? [["#/admin", "管理"], ["#/accounts", "停用账号"], ...links.slice(1)] : links;
}

function adminScreen() {
  show(`<h1>管理</h1><ul class="menu"><li><a href="#/feedback-review">反馈审核</a>：社工库查无此人的反馈，通过或不通过</li>
    <li><a href="#/audit">审核事项操作记录</a>：按审核事项编号查询谁在何时做了什么</li>
    <li><a href="#/deadlines">期限统计</a>：各地区待审、临期与逾期数量</li>
    <li><a href="#/accounts">停用或恢复账号</a>：人员离职、调岗或账号被盗时停用，核实后恢复</li></ul>`);
}

// ---- 停用账号 --------------------------------------------------------------------------------

const ROLE = { social_worker: "社会工作者", officer: "审核人员", admin: "管理员" };

function accountsScreen() {
  show(`<h1>停用或恢复账号</h1>
    <p>停用后该账号不能登录、刷新登录或找回密码，已登录的会话最迟在访问令牌到期（默认 15 分钟）时结束。每次操作连同理由记入操作记录。</p>
    <form id="account-status" class="card" novalidate>${formError}
      ${field({ name: "login", label: "账号（身份证号或电子邮箱）", attrs: 'autocomplete="off" spellcheck="false"' })}
      ${field({ name: "reason", label: "理由", hint: "2–200 字，如：调离岗位、账号被盗", attrs: 'maxlength="200"' })}
      <button type="submit" name="action" value="disable">停用账号</button>
      <button type="submit" name="action" value="enable" class="secondary">恢复账号</button></form>
    <section id="account-state" class="card" hidden aria-live="polite"></section>`);
  guard(main().querySelector("#account-status"), async (data, button) => {
    const action = button && button.value === "enable" ? "enable" : "disable";
    const state = await api.post(`/accounts/${action}`, values(data, ["login", "reason"]));
    const box = main().querySelector("#account-state");
    const unchanged = action === "disable" ? "该账号此前已停用，未作更改" : "该账号未被停用，未作更改";
    box.innerHTML = `<h2>${state.changed ? (action === "disable" ? "已停用" : "已恢复") : esc(unchanged)}</h2>
      <dl><dt>账号</dt><dd>${esc(state.login_masked)}</dd><dt>角色</dt><dd>${esc(ROLE[state.role] || state.role)}</dd>
      <dt>状态</dt><dd id="account-disabled">${state.disabled ? "已停用" : "正常"}</dd>
      ${state.disabled ? `<dt>停用时间</dt><dd>${esc(dateTime(state.disabled_at))}</dd><dt>停用原因</dt><dd>${esc(state.disabled_reason)}</dd>` : ""}</dl>`;
    box.hidden = false;
  });
}

// ---- 待审队列 --------------------------------------------------------------------------------

async function queueScreen(params) {
  const filters = Object.fromEntries(["kind", "status", "deadline", "submitted_from", "submitted_to"].map((k) => [k, params.get(k) || ""]));
  const page = await api.get("/review/queue", { ...filters, page_size: 50 });
  show(`<h1>待审队列</h1>
    <form id="filters" class="filters" novalidate>${formError}
      ${field({ name: "kind", label: "申请类型", kind: "select", options: Object.entries(KIND), value: filters.kind, required: false })}
      ${field({ name: "status", label: "审核状态", kind: "select", options: Object.entries(ITEM_STATUS), value: filters.status, required: false })}
      ${field({ name: "deadline", label: "办理期限", kind: "select", options: Object.entries(DEADLINE), value: filters.deadline, required: false })}
      ${field({ name: "submitted_from", label: "提交日期起", kind: "date", value: filters.submitted_from, required: false })}
      ${field({ name: "submitted_to", label: "提交日期止", kind: "date", value: filters.submitted_to, required: false })}
      <button type="submit" class="secondary">筛选</button></form>
    <p>共 ${esc(page.total ?? page.items.length)} 项${page.total_capped ? "（超过 10000 项）" : ""}。</p>
    <form id="batch" novalidate>${formError}
    <div class="scroll"><table id="queue"><thead><tr><th scope="col">选择</th><th scope="col">申请人</th><th scope="col">类型</th><th scope="col">环节</th>
      <th scope="col">轮次</th><th scope="col">提交时间</th><th scope="col">办理期限</th><th scope="col">操作</th></tr></thead><tbody>
    ${page.items.map((i) => `<tr class="${esc(i.deadline_state || "")}">
      <td>${i.status === "pending" ? `<input type="checkbox" name="item_ids" value="${esc(i.item_id)}" id="pick-${esc(i.item_id)}" aria-label="选择 ${esc(i.applicant_name_masked)}">` : ""}</td>
      <td>${esc(i.applicant_name_masked)}</td><td>${esc(KIND[i.kind])}</td><td>${esc(LEVEL[i.level])}${esc(STAGE[i.stage])}</td><td>${esc(i.round)}</td>
      <td>${esc(dateTime(i.submitted_at))}</td>
      <td>${esc(i.due_date)} ${i.deadline_state && i.deadline_state !== "on_time" ? `<span class="due ${esc(i.deadline_state)}">${esc(DEADLINE[i.deadline_state])}</span>` : ""}
        ${i.working_days_left != null ? `<small>（剩 ${esc(i.working_days_left)} 个工作日）</small>` : ""}</td>
      <td><a href="#/review/item/${esc(i.item_id)}">审核</a></td></tr>`).join("") || `<tr><td colspan="8">没有符合条件的事项。</td></tr>`}
    </tbody></table></div>
    ${field({ name: "reason", label: "批量审核意见（选填）", kind: "textarea", required: false })}
    <button type="submit">批量通过所选事项</button></form><div id="batch-result" aria-live="polite"></div>`);
  guard(main().querySelector("#filters"), async (data) => {
    const query = new URLSearchParams(Object.entries(values(data, Object.keys(filters))));
    location.hash = `#/review${[...query].length ? `?${query}` : ""}`;
  });
  const batch = main().querySelector("#batch");
  guard(batch, async (data) => {
    const ids = data.getAll("item_ids");
    if (!ids.length) { batch.querySelector(".form-error").innerHTML = "<p>请先选择要通过的事项</p>"; return; }
    const body = { item_ids: ids };
    if (data.get("reason")) body.reason = data.get("reason").trim();
    const result = await api.post("/review/batch-approvals", body);
    main().querySelector("#batch-result").innerHTML = `<p class="notice ok">已通过 ${esc(result.approved)} 项，未成功 ${esc(result.failed)} 项。</p>` +
      (result.failed ? `<ul>${result.results.filter((r) => !r.ok).map((r) => `<li>${esc(r.item_id)}：${esc(r.error_message)}</li>`).join("")}</ul>` : "") +
      `<p><a href="#/review" id="reload-queue">刷新队列</a></p>`;
  }, { item_ids: "batch" });
}

const main = () => document.getElementById("main");

// ---- 审核事项 --------------------------------------------------------------------------------

async function itemScreen(params, id) {
  const d = await api.get(`/review/items/${id}`);
  const f = d.form, i = d.item;
  const fileLink = (index) => index == null || !d.files[index] ? "" : d.files[index].url
    ? `<a href="${esc(d.files[index].url)}" rel="noreferrer" target="_blank">${esc(d.files[index].label)}</a>` : esc(d.files[index].note || "文件暂不可用");
  const photo = d.files.find((file) => file.kind === "photo");
  const ce = f.continuing_education;
  show(`<h1>审核：${esc(KIND[i.kind])}</h1>
    <div class="card"><p>${esc(LEVEL[i.level])}${esc(STAGE[i.stage])} · 第 ${esc(i.round)} 轮 · ${esc(ITEM_STATUS[i.status])} ·
      办理期限 ${esc(i.due_date)} ${i.deadline_state && i.deadline_state !== "on_time" ? `<span class="due ${esc(i.deadline_state)}">${esc(DEADLINE[i.deadline_state])}</span>` : ""}</p>
      <p><a href="#/audit/${esc(i.item_id)}">操作记录</a></p></div>
    <section class="card"><h2>提交的个人信息表</h2>
      ${photo && photo.url ? `<img class="photo" src="${esc(photo.url)}" alt="申请人照片">` : `<p>${esc(photo?.note || "无照片")}</p>`}
      <dl><dt>姓名</dt><dd id="applicant">${esc(f.name)}</dd><dt>身份证号</dt><dd>${esc(f.id_number_masked)}</dd><dt>性别</dt><dd>${esc(f.gender)}</dd>
      <dt>出生日期</dt><dd>${esc(f.birth_date)}</dd><dt>职业水平</dt><dd>${esc(f.level)}</dd><dt>管理号</dt><dd>${esc(f.management_number)}</dd>
      <dt>考试年度</dt><dd>${esc(f.exam_year)}</dd><dt>登记区域</dt><dd>${esc(f.region_code)}</dd><dt>单位类别</dt><dd>${esc(f.unit_category)}</dd>
      <dt>单位</dt><dd>${esc(f.unit_name)}</dd><dt>职务</dt><dd>${esc(f.position)}</dd>
      ${f.original_certificate_no ? `<dt>纸质证书 NO.</dt><dd>${esc(f.original_certificate_no)}（${esc(f.original_registration_type || "")}，${esc(f.original_valid_from || "")} 至 ${esc(f.original_valid_until || "")}）</dd>` : ""}
      ${f.previous_certificate_number ? `<dt>原证书编号</dt><dd>${esc(f.previous_certificate_number)}</dd>` : ""}</dl>
      <h3>工作经历</h3><ul>${f.work_experiences.map((w) => `<li>${esc(w.unit_name)} ${esc(w.position)}，${esc(w.start_date)} 至 ${esc(w.end_date || "今")}
        ${w.sanqu_programme ? "（三区计划）" : ""}${w.qianshou_programme ? "（牵手计划）" : ""} ${w.proof_files.map(fileLink).join(" ")}</li>`).join("") || "<li>无</li>"}</ul>
      <h3>个人荣誉</h3><ul>${f.honours.map((h) => `<li>${esc(h.title)}（${esc(h.level)}），${esc(h.awarding_body)}，${esc(h.awarded_on)} ${fileLink(h.proof_file)}</li>`).join("") || "<li>无</li>"}</ul>
      ${ce ? `<h3>继续教育</h3><p>须 ${esc(ce.required_hours)} 学时；线上 ${esc(ce.online_hours)}，线下 ${esc(ce.offline_hours)}，合计 ${esc(ce.total_hours)}</p>
        <ul>${ce.offline_courses.map((c) => `<li>${esc(c.institution)} · ${esc(c.course)} · ${esc(c.hours)} 学时 ${fileLink(c.proof_file)}</li>`).join("")}</ul>` : ""}
    </section>
    <section class="card"><h2>审核记录</h2><ul>${d.trail.map((t) => `<li>第 ${esc(t.round)} 轮 ${esc(LEVEL[t.level])}${esc(STAGE[t.stage])}：${esc(ITEM_STATUS[t.status])}
      ${t.decided_at ? `（${esc(dateTime(t.decided_at))}）` : ""} ${esc(t.reason || "")}</li>`).join("")}</ul></section>
    ${i.status === "pending" ? `<form id="decide" class="card" novalidate>${formError}<h2>审核决定</h2>
      <fieldset class="field" data-field="decision"><legend>审核结论</legend>
        <label class="choice"><input type="radio" name="decision" value="approve" checked> 通过</label>
        <label class="choice"><input type="radio" name="decision" value="reject"> 不通过</label>
        <label class="choice"><input type="radio" name="decision" value="return"> 退回修改</label><p class="error" aria-live="polite"></p></fieldset>
      ${field({ name: "reason", label: "审核意见", kind: "textarea", required: false, hint: "不通过或退回修改时必填，申请人可以看到" })}
      <button type="submit">提交审核决定</button></form>` : ""}`);
  const form = main().querySelector("#decide");
  if (form) guard(form, async (data) => {
    const body = { decision: data.get("decision") };
    if (data.get("reason").trim()) body.reason = data.get("reason").trim();
    const result = await api.post(`/review/items/${id}/decision`, body);
    show(`<h1>已提交</h1><p class="notice ok" id="decided">审核决定已记录（${esc({ approve: "通过", reject: "不通过", return: "退回修改" }[result.decision])}）。</p>
      <p><a href="#/review">返回待审队列</a></p>`);
  });
}

// ---- 期限统计 --------------------------------------------------------------------------------

async function deadlinesScreen(params) {
  const groupBy = params.get("group_by") || "county";
  const s = await api.get("/review/deadlines", { group_by: groupBy });
  show(`<h1>期限统计</h1><p>截至 ${esc(dateTime(s.as_of))}：待审 ${esc(s.pending)}，临近期限 ${esc(s.near_due)}（${esc(s.near_due_working_days)} 个工作日内），已超期 ${esc(s.overdue)}。</p>
    <form id="group" class="filters" novalidate>${field({ name: "group_by", label: "统计单位", kind: "select", options: Object.entries(LEVEL), value: groupBy })}
    <button type="submit" class="secondary">统计</button></form>
    <div class="scroll"><table id="deadlines"><thead><tr><th scope="col">地区</th><th scope="col">审核层级</th><th scope="col">待审</th><th scope="col">临期</th><th scope="col">超期</th></tr></thead><tbody>
    ${s.rows.map((r) => `<tr><td>${esc(r.region)}</td><td>${esc(LEVEL[r.level])}</td><td>${esc(r.pending)}</td><td>${esc(r.near_due)}</td><td>${esc(r.overdue)}</td></tr>`).join("") || `<tr><td colspan="5">无待审事项。</td></tr>`}
    </tbody></table></div>`);
  guard(main().querySelector("#group"), async (data) => { location.hash = `#/deadlines?group_by=${encodeURIComponent(data.get("group_by"))}`; });
}

// ---- 反馈审核 --------------------------------------------------------------------------------

const FEEDBACK_STATUS = { pending: "待处理", approved: "已通过", rejected: "未通过" };

async function feedbackListScreen(params) {
  const status = params.get("status") || "pending";
  const page = await api.get("/feedback", { status });
  show(`<h1>反馈审核</h1>
    <p>${Object.entries(FEEDBACK_STATUS).map(([k, v]) => k === status ? `<strong>${v}</strong>` : `<a href="#/feedback-review?status=${k}">${v}</a>`).join(" · ")}</p>
    <div class="scroll"><table id="feedback-list"><thead><tr><th scope="col">姓名</th><th scope="col">身份证号</th><th scope="col">职业水平</th><th scope="col">考试年度</th><th scope="col">提交时间</th><th scope="col">操作</th></tr></thead><tbody>
    ${page.items.map((f) => `<tr><td>${esc(f.name)}</td><td>${esc(f.id_number_masked)}</td><td>${esc(f.level)}</td><td>${esc(f.exam_year)}</td>
      <td>${esc(dateTime(f.submitted_at))}</td><td><a href="#/feedback-review/${esc(f.feedback_id)}">处理</a></td></tr>`).join("") || `<tr><td colspan="6">无。</td></tr>`}
    </tbody></table></div>`);
}

async function feedbackItemScreen(params, id) {
  const f = await api.get(`/feedback/${id}`);
  show(`<h1>反馈详情</h1><div class="card"><dl><dt>姓名</dt><dd>${esc(f.name)}</dd><dt>身份证号</dt><dd>${esc(f.id_number)}</dd>
    <dt>电子邮箱</dt><dd>${esc(f.email)}</dd><dt>职业水平</dt><dd>${esc(f.level)}</dd><dt>考试年度</dt><dd>${esc(f.exam_year)}</dd>
    <dt>管理号</dt><dd>${esc(f.management_number || "未填")}</dd><dt>地区</dt><dd>${esc(f.region_code)}</dd><dt>说明</dt><dd>${esc(f.note)}</dd>
    <dt>状态</dt><dd>${esc(FEEDBACK_STATUS[f.status])}${f.reason ? `（${esc(f.reason)}）` : ""}</dd>
    <dt>证明材料</dt><dd>${f.proof ? `<a href="${esc(f.proof.url)}" rel="noreferrer" target="_blank">${esc(f.proof.filename)}</a>` : "无"}</dd></dl></div>
    ${f.status === "pending" ? `<form id="decide" class="card" novalidate>${formError}<h2>处理结论</h2>
      <fieldset class="field" data-field="decision"><legend>结论</legend>
      <label class="choice"><input type="radio" name="decision" value="approve" checked> 通过（加入社工库）</label>
      <label class="choice"><input type="radio" name="decision" value="reject"> 不通过</label><p class="error" aria-live="polite"></p></fieldset>
      ${field({ name: "management_number", label: "职业水平证书管理号", value: f.management_number || "", required: false, hint: "通过时须核实并填写" })}
      ${field({ name: "reason", label: "理由", kind: "textarea", required: false, hint: "不通过时必填，将以邮件告知本人" })}
      <button type="submit">提交</button></form>` : ""}`);
  const form = main().querySelector("#decide");
  if (form) guard(form, async (data) => {
    const body = values(data, ["decision", "management_number", "reason"]);
    const result = await api.post(`/feedback/${id}/decision`, body);
    show(`<h1>已处理</h1><p class="notice ok" id="decided">反馈${esc(FEEDBACK_STATUS[result.status])}，结果已邮件通知 ${esc(f.email)}。</p><p><a href="#/feedback-review">返回列表</a></p>`);
  });
}

// ---- 操作记录 --------------------------------------------------------------------------------

const ACTIONS = { "item.opened": "进入审核", "item.viewed": "查看", "item.approved": "通过", "item.rejected": "不通过", "item.returned": "退回修改" };

async function auditScreen(params, id) {
  let entries = "";
  if (id) {
    const audit = await api.get(`/review/items/${id}/audit`);
    entries = `<div class="scroll"><table id="audit"><thead><tr><th scope="col">时间</th><th scope="col">操作人</th><th scope="col">操作</th><th scope="col">层级</th><th scope="col">意见</th></tr></thead><tbody>
      ${audit.entries.map((e) => `<tr><td>${esc(dateTime(e.at))}</td><td>${esc(e.actor)}</td><td>${esc(ACTIONS[e.action] || e.action)}${e.batch_id ? "（批量）" : ""}</td>
      <td>${esc(LEVEL[e.level] || e.level || "")}</td><td>${esc(e.reason || "")}</td></tr>`).join("")}</tbody></table></div>`;
  }
  show(`<h1>审核事项操作记录</h1><form id="find" class="filters" novalidate>${formError}
    ${field({ name: "item_id", label: "审核事项编号", value: id || "", attrs: 'spellcheck="false"' })}<button type="submit" class="secondary">查询</button></form>${entries}`);
  guard(main().querySelector("#find"), async (data) => { location.hash = `#/audit/${encodeURIComponent(data.get("item_id").trim())}`; });
}

export const staffRoutes = [
  [/^\/admin$/, adminScreen, "admin"], [/^\/accounts$/, accountsScreen, "admin"],
  [/^\/review$/, queueScreen, "staff"], [/^\/review\/item\/([\w-]+)$/, itemScreen, "staff"],
  [/^\/deadlines$/, deadlinesScreen, "staff"], [/^\/feedback-review$/, feedbackListScreen, "staff"],
  [/^\/feedback-review\/([\w-]+)$/, feedbackItemScreen, "staff"], [/^\/audit$/, auditScreen, "staff"],
  [/^\/audit\/([^/]+)$/, auditScreen, "staff"],
];

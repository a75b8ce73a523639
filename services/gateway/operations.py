"""Every HTTP operation of the gateway: method, resource path, the RPC it calls and the contract
models of that RPC (swms/contracts). The routes, the input handling and the OpenAPI document are
all generated from this table; tests/unit/test_gateway.py checks each entry's models against the
service's own ``@contract`` so that the table cannot drift from the services.

Path fields (``{item_id}``) and, for GET/DELETE, query fields fill the RPC's request object; for
POST/PUT/PATCH the rest comes from the JSON body. Internal service-to-service methods (get_snapshot,
get_issuance_data, get_photo_link, contact and message lookups, health) have no route.

Public verification (``certificate.verify_certificate``, ``get_signing_certificates``) is served by
``public.py``: the HTML page, its JSON twin under ``/public/...`` and /.well-known (the page, a form
post, ETags and the cache do not fit a one-route-one-RPC table).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel

from swms.contracts import certificate as cert
from swms.contracts import identity as idn
from swms.contracts import notification as note
from swms.contracts import profile as prof
from swms.contracts import registration as reg
from swms.contracts import review as rev

PREFIX = "/api/v1"
BODY_METHODS = ("POST", "PUT", "PATCH")   # the request fields not in the path come from a JSON body


@dataclass(frozen=True)
class Operation:
    method: str
    path: str                               # under PREFIX
    rpc: str                                # service.method
    request: type[BaseModel] | None
    response: type[BaseModel]
    summary: str
    auth: bool = True                       # a Bearer token is required (public ones pass it on if given)
    inline_file: bool = False               # the body carries a file (反馈's proof): the larger limit

    @property
    def route(self) -> str:
        return PREFIX + self.path

    @property
    def operation_id(self) -> str:
        return self.rpc.replace(".", "_") + ("" if self.method in ("GET", "POST") else "_" + self.method.lower())

    @property
    def tag(self) -> str:
        return self.rpc.split(".")[0]

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{(\w+)}", self.path))

    @property
    def takes_body(self) -> bool:
        """POST/PUT/PATCH with request fields left after the path: a JSON object body is required."""
        return self.method in BODY_METHODS and bool(self.body_fields)

    @property
    def body_fields(self) -> tuple[str, ...]:
        if self.request is None or self.method not in BODY_METHODS:
            return ()
        return tuple(name for name in self.request.model_fields if name not in self.path_fields)

    @property
    def query_fields(self) -> tuple[str, ...]:
        if self.request is None or self.method in BODY_METHODS:
            return ()
        return tuple(name for name in self.request.model_fields if name not in self.path_fields)


def op(method: str, path: str, rpc: str, request, response, summary: str, **extra) -> Operation:
    return Operation(method, path, rpc, request, response, summary, **extra)


OPERATIONS: tuple[Operation, ...] = (
    # identity: sign-up, sessions, password reset, email confirmation, 反馈
    op("POST", "/passers/check", "identity.check_passer", idn.CheckPasserRequest, idn.CheckPasserResponse,
       "注册第一步：姓名与身份证号核对社工库", auth=False),
    op("POST", "/accounts", "identity.sign_up", idn.SignUpRequest, idn.SignUpResponse,
       "注册账号（邮箱验证码随后寄出）", auth=False),
    op("POST", "/sessions", "identity.login", idn.LoginRequest, idn.TokenResponse,
       "登录（身份证号或邮箱 + 密码）", auth=False),
    op("POST", "/sessions/refresh", "identity.refresh", idn.RefreshRequest, idn.TokenResponse,
       "以刷新令牌换取新的访问令牌", auth=False),
    op("POST", "/sessions/logout", "identity.logout", idn.RefreshRequest, idn.Acknowledged,
       "退出登录（吊销刷新令牌）", auth=False),
    op("POST", "/password-resets", "identity.request_password_reset", idn.PasswordResetStart,
       idn.PasswordResetStarted, "申请重置密码（验证码寄至已验证邮箱）", auth=False),
    op("POST", "/password-resets/confirm", "identity.reset_password", idn.PasswordResetConfirm,
       idn.Acknowledged, "以验证码设置新密码", auth=False),
    op("POST", "/me/email/confirmation", "identity.confirm_email", idn.EmailConfirm, idn.EmailConfirmed,
       "以邮件验证码验证邮箱"),
    op("POST", "/me/email/confirmation-code", "identity.request_email_confirmation", None,
       idn.EmailConfirmationStarted, "重新发送邮箱验证码"),
    op("GET", "/persons/{person_id}", "identity.get_person", idn.PersonRequest, idn.PersonResponse,
       "个人账户信息（本人、管理员）"),
    op("POST", "/feedback", "identity.submit_feedback", idn.FeedbackRequest, idn.FeedbackReceipt,
       "反馈：社工库查无此人时提交（可附证明文件，base64）", auth=False, inline_file=True),
    # the submitter follows a 反馈: id and ID number in the body (never in a URL or an access log)
    op("POST", "/feedback/status-lookups", "identity.get_feedback_status", idn.FeedbackStatusRequest,
       idn.FeedbackStatusAnswer, "反馈提交人查询处理结果（反馈编号与身份证号须一致）", auth=False),
    op("GET", "/feedback", "identity.list_feedback", idn.FeedbackQuery, idn.FeedbackPage,
       "本辖区的反馈列表（审核人员）"),
    op("GET", "/feedback/{feedback_id}", "identity.get_feedback", idn.FeedbackRef, idn.FeedbackDetail,
       "反馈详情与证明文件链接（审核人员）"),
    op("POST", "/feedback/{feedback_id}/decision", "identity.decide_feedback", idn.FeedbackDecisionRequest,
       idn.FeedbackItem, "反馈审核：通过或不通过（审核人员）"),
    # administrators: the login (it may be an ID number) travels in the body, never in the path
    op("POST", "/accounts/disable", "identity.disable_account", idn.AccountStatusRequest, idn.AccountState,
       "停用账号：不能登录、刷新或找回密码（管理员，须填写理由）"),
    op("POST", "/accounts/enable", "identity.enable_account", idn.AccountStatusRequest, idn.AccountState,
       "恢复已停用的账号（管理员，须填写理由）"),

    # profile: 个人信息表
    op("PUT", "/me/profile/basic-info", "profile.save_basic_info", prof.BasicInfoRequest, prof.ProfileResponse,
       "保存基础信息与真实性承诺"),
    op("POST", "/me/uploads", "profile.request_upload", prof.UploadRequest, prof.UploadTicket,
       "申请上传表单（照片或证明文件）：文件直接提交至对象存储"),
    op("PUT", "/me/profile/photo", "profile.confirm_photo", prof.UploadRef, prof.PhotoResponse,
       "确认已上传的照片（按内容检查）"),
    op("POST", "/me/profile/work-experiences", "profile.save_work_experience", prof.WorkExperienceRequest,
       prof.WorkExperienceResponse, "新增工作经历"),
    op("PUT", "/me/profile/work-experiences/{experience_id}", "profile.save_work_experience",
       prof.WorkExperienceRequest, prof.WorkExperienceResponse, "修改工作经历"),
    op("DELETE", "/me/profile/work-experiences/{experience_id}", "profile.delete_work_experience",
       prof.WorkExperienceRef, prof.ChangeResponse, "删除工作经历"),
    op("POST", "/me/profile/honours", "profile.save_honour", prof.HonourRequest, prof.HonourResponse,
       "新增个人荣誉"),
    op("PUT", "/me/profile/honours/{honour_id}", "profile.save_honour", prof.HonourRequest, prof.HonourResponse,
       "修改个人荣誉"),
    op("DELETE", "/me/profile/honours/{honour_id}", "profile.delete_honour", prof.HonourRef, prof.ChangeResponse,
       "删除个人荣誉"),
    op("GET", "/persons/{person_id}/profile", "profile.get_profile", prof.PersonReadRequest, prof.ProfileResponse,
       "个人信息表（本人、本辖区审核人员；管理员须注明查询事由 access_reason）"),
    op("GET", "/persons/{person_id}/profile/completeness", "profile.check_completeness", prof.PersonReadRequest,
       prof.CompletenessResponse, "系统校验：个人信息表是否完整"),
    op("GET", "/persons/{person_id}/files", "profile.get_file_link", prof.FileRef, prof.FileLink,
       "照片或证明文件的下载链接（file_key）"),
    op("GET", "/organisations", "profile.search_organisations", prof.OrganisationSearchRequest,
       prof.OrganisationPage, "查询社会工作服务机构名录"),

    # registration: applications and drafts of each kind
    op("POST", "/me/applications/first-registration", "registration.submit_first_registration",
       reg.SubmitFirstRegistrationRequest, reg.ApplicationResponse, "提交首次登记（驳回后重新提交同此）"),
    op("POST", "/me/applications/re-registration", "registration.submit_re_registration",
       reg.SubmitReRegistrationRequest, reg.ApplicationResponse, "提交再登记（含线下继续教育学时）"),
    op("POST", "/me/applications/replacement", "registration.submit_replacement", reg.SubmitReplacementRequest,
       reg.ApplicationResponse, "提交更换电子证书"),
    op("POST", "/me/applications/upgrade", "registration.submit_upgrade", reg.SubmitUpgradeRequest,
       reg.ApplicationResponse, "提交升级换发（已出证待升级）"),
    op("GET", "/me/applications", "registration.list_my_applications", None, reg.ApplicationList,
       "我的申请（含草稿）"),
    op("GET", "/me/registration", "registration.my_registration", None, reg.RegistrationStanding,
       "我的登记状况与可办理的业务"),
    op("POST", "/me/drafts", "registration.open_draft", reg.OpenDraftRequest, reg.ApplicationResponse,
       "打开（或新建）某类申请的草稿"),
    # PATCH: a draft save changes only the fields the body names (null empties one), as JSON Merge Patch
    op("PATCH", "/me/drafts/re-registration", "registration.save_re_registration_draft",
       reg.ReRegistrationDraftRequest, reg.ApplicationResponse, "保存再登记草稿"),
    op("PATCH", "/me/drafts/replacement", "registration.save_replacement_draft", reg.ReplacementDraftRequest,
       reg.ApplicationResponse, "保存更换电子证书草稿"),
    op("POST", "/me/proof-uploads", "registration.request_proof_upload", reg.ProofUploadRequest,
       reg.ProofUploadTicket, "申请继续教育证明的上传表单"),
    op("POST", "/me/proof-uploads/confirmation", "registration.confirm_proof_upload", reg.ProofRef,
       reg.ProofFile, "确认已上传的证明文件（按内容检查）"),
    op("GET", "/applications/{application_id}", "registration.get_application", reg.ApplicationReadRequest,
       reg.ApplicationResponse, "申请详情与状态历史"),
    op("POST", "/applications/{application_id}/submission", "registration.submit_draft", reg.SubmitDraftRequest,
       reg.ApplicationResponse, "提交草稿（或重新提交被驳回的申请）"),
    op("DELETE", "/applications/{application_id}", "registration.discard_draft", reg.ApplicationRef,
       reg.DraftDiscarded, "删除草稿"),
    op("GET", "/applications/{application_id}/proof-link", "registration.get_proof_link", reg.ProofLinkRequest,
       reg.ProofLink, "申请中证明文件的下载链接（proof_key）"),

    # review: queue, item, decisions, batch, deadlines, audit
    op("GET", "/review/queue", "review.list_queue", rev.QueueRequest, rev.QueuePage, "待审队列（审核人员）"),
    op("GET", "/review/items/{item_id}", "review.get_item", rev.ItemRef, rev.ItemDetail,
       "审核事项：提交的申请、文件与审核记录"),
    op("POST", "/review/items/{item_id}/decision", "review.decide", rev.DecideRequest, rev.DecisionResponse,
       "审核决定：通过、不通过或退回修改"),
    op("GET", "/review/items/{item_id}/audit", "review.get_item_audit", rev.ItemRef, rev.ItemAudit,
       "审核事项的操作记录"),
    op("POST", "/review/batch-approvals", "review.approve_batch", rev.BatchApproveRequest,
       rev.BatchDecisionResponse, "批量审核通过"),
    op("GET", "/review/deadlines", "review.deadline_summary", rev.SummaryRequest, rev.DeadlineSummary,
       "各地区待审、临期与逾期数量"),

    # certificate: 查看证书, issue status, lifecycle
    op("GET", "/applications/{application_id}/certificate", "certificate.view_certificate",
       cert.CertificateRequest, cert.CertificateView, "查看证书：证书信息与短时下载链接"),
    op("GET", "/applications/{application_id}/issuance", "certificate.get_issuance_status",
       cert.IssuanceStatusRequest, cert.IssuanceStatus, "出证进度"),
    op("POST", "/certificates/{certificate_number}/revocation", "certificate.revoke_certificate",
       cert.StatusChangeRequest, cert.CertificateStatus, "撤销证书"),
    op("POST", "/certificates/{certificate_number}/suspension", "certificate.suspend_certificate",
       cert.StatusChangeRequest, cert.CertificateStatus, "暂停证书"),
    op("POST", "/certificates/{certificate_number}/reinstatement", "certificate.reinstate_certificate",
       cert.StatusChangeRequest, cert.CertificateStatus, "恢复被暂停的证书"),

    # notification: messages, reminders, failures (admin)
    op("GET", "/persons/{person_id}/messages", "notification.list_messages", note.MessagesRequest,
       note.MessageList, "发给某人的邮件"),
    op("GET", "/persons/{person_id}/reminders", "notification.list_reminders", note.RemindersRequest,
       note.ReminderList, "再登记提醒"),
    op("GET", "/notification/failures", "notification.list_failures", note.FailuresRequest, note.FailureList,
       "未能发送的邮件（管理员）"),
    op("POST", "/notification/messages/{message_id}/retry", "notification.retry_message", note.RetryRequest,
       note.MessageOut, "重新发送邮件（管理员）"),
    # notification: webhooks for agencies (admin; docs/webhooks.md)
    op("POST", "/notification/webhooks", "notification.register_webhook_endpoint", note.WebhookEndpointRequest,
       note.WebhookEndpointCreated, "登记机构的事件回调地址（签名密钥仅此一次返回，管理员）"),
    op("GET", "/notification/webhooks", "notification.list_webhook_endpoints", note.WebhookEndpointsRequest,
       note.WebhookEndpointList, "机构的事件回调地址（管理员）"),
    op("POST", "/notification/webhooks/{endpoint_id}/status", "notification.set_webhook_endpoint_status",
       note.WebhookEndpointStatusRequest, note.WebhookEndpointOut, "启用或停用事件回调地址（管理员）"),
    op("GET", "/notification/webhooks/{endpoint_id}/deliveries", "notification.list_webhook_deliveries",
       note.WebhookDeliveriesRequest, note.WebhookDeliveryList, "事件回调的投递与每次尝试（管理员）"),
    op("POST", "/notification/webhooks/{endpoint_id}/replays", "notification.replay_webhook_events",
       note.WebhookReplayRequest, note.WebhookReplayOut, "按事件编号或时间重放事件（管理员）"),
)

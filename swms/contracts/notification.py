from __future__ import annotations

import datetime as dt

from pydantic import Field

from swms.contracts.common import Contract, Uuid


class MessagesRequest(Contract):
    person_id: Uuid = Field(title="人员编号")


class MessageOut(Contract):
    message_id: Uuid
    kind: str
    to_masked: str
    subject: str
    status: str
    attempts: int
    created_at: dt.datetime
    sent_at: dt.datetime | None
    last_error: str | None


class MessageList(Contract):
    items: list[MessageOut]

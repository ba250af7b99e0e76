"""Payload models of the Desk actions (docs/topics.md)."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, model_validator

from bridge.core.actions import Flag, Payload, SessionPayload

SID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"


class GetState(Payload):
    """`desk/get_session_state`: by `session_id`, or `client_user_id` + `customer_service_id`."""

    session_id: str | None = Field(default=None, pattern=SID_PATTERN)
    client_user_id: str | None = Field(default=None, min_length=1, max_length=128)
    customer_service_id: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _one_form(self) -> GetState:
        by_user = self.client_user_id is not None or self.customer_service_id is not None
        if self.session_id is not None and by_user:
            raise ValueError("give session_id, or client_user_id + customer_service_id, not both")
        if self.session_id is None and not (self.client_user_id and self.customer_service_id):
            raise ValueError("session_id, or client_user_id and customer_service_id, required")
        return self


class Watch(SessionPayload):
    """`desk/watch`: start polling a session's state (`{"stop": true}` stops it)."""

    interval: PositiveFloat | None = None
    stop: Flag = False


class Unwatch(SessionPayload):
    """`desk/unwatch`: stop polling a session's state."""


class SendStream(SessionPayload):
    """`desk/send_stream`: one chunk of a streamed message; `finish` ends the message."""

    chunk: str = ""
    finish: Flag = False

"""Handover and history payloads: snake_case with booleans on MQTT, PascalCase 0/1 upstream."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bridge.features.desk.handover import GetMessages, TransferToHuman
from bridge.tencent.desk_handover import chat_message, iso_ms, message_text


def test_every_documented_field_reaches_the_body() -> None:
    payload = TransferToHuman.model_validate(
        {
            "session_id": "s1",
            "agent_ids": ["a1", "a2@x"],
            "agent_group_id": 7,
            "priority": 0,
            "queue_timeout": 120,
            "send_tip_if_no_agent_online": True,
            "check_if_during_working_hours": 0,
            "send_prompt_not_during_working_hours": 1,
            "end_session_when_no_member_online": False,
            "disable_queuing": True,
            "allow_assign_busy_member": False,
        }
    )
    assert payload.request().body() == {
        "SessionId": "s1",
        "AgentIdList": ["a1", "a2@x"],
        "AgentGroupId": 7,
        "Priority": 0,
        "QueueTimeout": 120,
        "SendTipIfNoAgentOnline": 1,
        "CheckIfDuringWorkingHours": 0,
        "SendPromptNotDuringWorkingHours": 1,
        "EndSessionWhenNoMemberOnline": 0,
        "DisableQueuing": 1,
        "AllowAssignBusyMember": 0,
    }


def test_absent_fields_are_left_to_tencent() -> None:
    assert TransferToHuman(session_id="s1").request().body() == {"SessionId": "s1"}


@pytest.mark.parametrize(
    "bad",
    [
        {"priority": 10},
        {"priority": -1},
        {"priority": "1"},
        {"disable_queuing": 2},
        {"disable_queuing": "yes"},
        {"agent_ids": ["has space"]},
        {"agent_ids": "a1"},
        {"queue_timeout": 0},
        {"agentIds": ["a"]},
    ],
)
def test_out_of_range_or_unknown_fields_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TransferToHuman.model_validate({"session_id": "s1", **bad})


def test_message_paging_bounds() -> None:
    assert GetMessages(session_id="s").model_dump() == {
        "session_id": "s",
        "limit": 20,
        "offset": 0,
        "order": "newest_first",
    }
    for bad in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"order": "newest"}):
        with pytest.raises(ValidationError):
            GetMessages.model_validate({"session_id": "s", **bad})


def test_history_entries_are_typed() -> None:
    msg = chat_message(
        {
            "FromAccount": "u1",
            "FromAccountRole": 2,
            "MsgBody": [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi"}}],
            "Timestamp": 0,
        }
    )
    assert (msg.role, msg.text, msg.time) == ("agent", "hi", "1970-01-01T00:00:00.000Z")
    assert chat_message({"FromAccountRole": 9}).role == "unknown"
    assert chat_message({"FromAccountRole": 3, "MsgBody": "x"}).text == ""
    assert iso_ms(None) is None and message_text([{"MsgType": "TIMFaceElem"}]) == ""


def test_a_message_time_no_date_holds_is_no_time_and_the_page_stands() -> None:
    assert iso_ms(10**17) is None and iso_ms(-5) is None
    msg = chat_message({"FromAccountRole": 1, "Timestamp": 10**17, "MsgBody": []})
    assert msg.time is None and msg.timestamp_ms == 10**17 and msg.role == "user"

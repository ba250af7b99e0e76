"""`tencent2mqtt topics`: the tree, and the AsyncAPI 3 document against the official schema."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from bridge.app import all_action_specs
from bridge.cli.asyncapi import asyncapi
from bridge.cli.main import main
from bridge.config import Settings
from bridge.core.topics import SHORTHANDS

SCHEMA = json.loads((Path(__file__).parents[2] / "data/asyncapi-3.0.0.schema.json").read_text())
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    settings = Settings(mqtt={"base_topic": "home/t2m"}, homeassistant={"enabled": True})
    return asyncapi(settings, all_action_specs())


def errors(doc: dict[str, Any]) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_document_is_valid_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert errors(document) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d.pop("info"),
        lambda d: d.__setitem__("asyncapi", "3.0"),
        lambda d: d["channels"]["ivh_state"].__setitem__("address", 5),
        lambda d: d["operations"]["ivh_state"].__setitem__("action", "publish"),
        lambda d: d["servers"]["broker"].pop("protocol"),
        lambda d: d["channels"]["ivh_state"].__setitem__("unknown_field", 1),
    ],
)
def test_the_validator_rejects_a_broken_document(document: dict[str, Any], breakage: Any) -> None:
    broken = copy.deepcopy(document)
    breakage(broken)
    assert errors(broken)


def test_every_ref_resolves_inside_the_document(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert len(found) > 50
    for ref in found:
        assert resolve(document, ref) is not None


def test_generated_from_the_registry_and_models(document: dict[str, Any]) -> None:
    channels = document["channels"]
    schemas = document["components"]["schemas"]
    for spec in all_action_specs():
        key = spec.key.replace("/", "_")
        assert channels[f"request_{key}"]["address"] == f"home/t2m/bridge/request/{spec.key}"
        assert channels[f"response_{key}"]["address"] == f"home/t2m/bridge/response/{spec.key}"
        request = schemas[f"{key}_request"]
        model_fields = set(spec.model.model_fields)
        assert set(request["properties"]) == model_fields | {"transaction", "expires_at"}
        assert document["operations"][f"request_{key}"]["action"] == "receive"
        reply = document["operations"][f"request_{key}"]["reply"]["channel"]["$ref"]
        assert reply == f"#/channels/response_{key}"
    for service, leaves in SHORTHANDS.items():
        for leaf in leaves:
            address = channels[f"{service}_{leaf}"]["address"]
            assert address == f"home/t2m/{service}/{{session_id}}/{leaf}"
    assert channels["ivh_state"]["parameters"]["session_id"]
    assert document["operations"]["ivh_state"]["action"] == "send"
    assert schemas["SessionState"]["required"]
    assert channels["ha_config"]["address"] == "homeassistant/device/{object_id}/config"


def test_topics_command_prints_the_tree() -> None:
    env = {"TENCENT2MQTT_MQTT__BASE_TOPIC": "kiosk", "TENCENT2MQTT_CONFIG": ""}
    result = CliRunner().invoke(main, ["topics"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split()[:3] == ["out", "retained", "kiosk/ivh/<sid>/state"] for line in lines)
    assert any(line.split()[:3] == ["in", "-", "kiosk/ivh/<sid>/text"] for line in lines)
    for spec in all_action_specs():
        assert f"kiosk/bridge/request/{spec.key} " in result.output
    assert "homeassistant/" not in result.output


def test_topics_command_writes_asyncapi(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    env = {"TENCENT2MQTT_HOMEASSISTANT__ENABLED": "true", "TENCENT2MQTT_CONFIG": ""}
    result = CliRunner().invoke(main, ["topics", "--asyncapi", "-o", str(out)], env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert errors(doc) == []
    assert "ha_status" in doc["channels"]


def test_a_cluster_document_has_the_membership_topics_and_stays_valid() -> None:
    settings = Settings(cluster={"enabled": True})
    doc = asyncapi(settings, all_action_specs())
    assert errors(doc) == []
    member = doc["channels"]["cluster_instance"]
    assert member["address"] == "tencent2mqtt/bridge/instances/{instance_id}"
    assert set(member["parameters"]) == {"instance_id"}
    assert doc["channels"]["cluster_release"]["address"].endswith("/bridge/release/{instance_id}")


def test_the_audio_topic_takes_bytes_with_a_content_type(document: dict[str, Any]) -> None:
    channel = document["channels"]["ivh_audio"]
    assert channel["address"] == "home/t2m/ivh/{session_id}/audio"
    messages = [resolve(document, ref["$ref"]) for ref in channel["messages"].values()]
    types = {m["contentType"] for m in messages}
    assert types == {"audio/wav", "audio/L16;rate=16000;channels=1"}
    assert all(m["payload"] == {**m["payload"], "format": "binary"} for m in messages)
    request = document["components"]["schemas"]["ivh_send_audio_request"]
    assert request["properties"]["audio"]["contentEncoding"] == "base64"

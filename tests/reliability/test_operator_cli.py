"""The operator's command line under wrong input (issue 17): real `python -m bridge` processes
give one line saying what is wrong, exit non-zero, and never a traceback."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

from tests.support.broker import Broker
from tests.support.cli import TRACEBACK, bridge_cli, run_until

BRIDGE = Path(__file__).resolve().parents[2] / "bridge"


def test_http_port_in_use_ends_run_with_one_line(broker: Broker, tmp_path: Path) -> None:
    """Defect 5: it exited 3 with a stray "Event loop is closed" after a uvicorn error."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"TENCENT2MQTT_MQTT__URL": broker.url, "TENCENT2MQTT_HTTP__LISTEN": f":{port}"}
        ran = run_until(env, "MQTT connected", tmp_path)
    assert ran.code == 1, ran.err
    errors = [line for line in ran.err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, ran.err
    assert f"cannot start: http.listen 127.0.0.1:{port}: cannot listen: " in errors[0]
    assert "address already in use" in errors[0].lower()
    assert TRACEBACK not in ran.err and "Event loop is closed" not in ran.err
    assert "MQTT connected" not in ran.err  # refused before anything started


def test_http_listen_that_cannot_be_a_port_fails_check_config_and_run(tmp_path: Path) -> None:
    """Defect 5: `nonsense` and `127.0.0.1:99999` passed check-config; run then logged a
    traceback every second forever."""
    for listen in ("nonsense", "127.0.0.1:99999"):
        env = {"TENCENT2MQTT_HTTP__LISTEN": listen, "TENCENT2MQTT_MQTT__URL": "mqtt://127.0.0.1:1"}
        checked = bridge_cli("check-config", env=env)
        ran = run_until(env, "MQTT cannot connect", tmp_path)
        assert checked.code == ran.code == 2
        assert checked.problems == ran.problems and ran.problems[0].startswith("http.listen: ")
        assert TRACEBACK not in checked.err + ran.err


def test_topics_to_a_file_it_cannot_write(tmp_path: Path) -> None:
    """Defect 13: `topics --asyncapi -o /no/such/dir/x.json` ended in a traceback."""
    target = tmp_path / "no" / "such" / "x.json"
    result = bridge_cli("topics", "--asyncapi", "-o", str(target), env={})
    assert result.code == 1 and result.out == ""
    assert result.err.strip() == f"Error: cannot write {target}: No such file or directory"


def test_no_message_cites_a_document_users_do_not_have() -> None:
    """Defect 14: an error said "docs/protocol.md B.4". Messages (every string that is not a
    docstring) name no section of the maintainers' SPEC or PROTOCOL documents."""
    found = []
    for path in sorted(BRIDGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if id(node) not in docstrings and ("PROTOCOL " in text or "SPEC " in text):
                    found.append(f"{path.relative_to(BRIDGE)}:{node.lineno}: {text[:60]!r}")
    assert found == []

"""`tencent2mqtt topics` and `tencent2mqtt request` (README.md)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from bridge.cli.common import config_option, load_or_exit
from bridge.config import Settings
from bridge.core import jsontext
from bridge.core.topics import Topics
from bridge.mqtt.toolclient import BrokerError, ToolClient, request

EXIT_ERROR_RESPONSE = 1
EXIT_NO_ANSWER = 3


@click.command("topics")
@config_option
@click.option("--asyncapi", "as_asyncapi", is_flag=True, help="Emit an AsyncAPI 3.0.0 document.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Emit docs/topics.md (Markdown).")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to a file instead of stdout.",
)
def topics_command(
    config_path: Path | None, as_asyncapi: bool, as_markdown: bool, output: Path | None
) -> None:
    """Print the topic tree for this config (--asyncapi: an AsyncAPI 3 document, as JSON;
    --markdown: the reference of docs/topics.md)."""
    from bridge.app import all_action_specs

    settings = load_or_exit(config_path)
    specs = all_action_specs()
    if as_asyncapi:
        from bridge.cli.asyncapi import asyncapi

        # JSON is YAML 1.2: every AsyncAPI tool reads it, and no YAML library is needed.
        text = jsontext.dumps(asyncapi(settings, specs), indent=2) + "\n"
    elif as_markdown:
        from bridge.cli.topics_doc import topics_markdown

        text = topics_markdown(settings, specs)
    else:
        text = topic_tree(settings, specs)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc


def topic_tree(settings: Settings, specs: list[Any]) -> str:
    """The topic tree as aligned text: direction, retained, topic, what it is."""
    from bridge.core.catalog import catalog

    docs = catalog(settings, specs)
    width = max(len(doc.display()) for doc in docs)
    lines = [f"# topics of base {settings.mqtt.base_topic!r}; <sid> is a session id"]
    for doc in docs:
        flag = "retained" if doc.retained else "-"
        lines.append(f"{doc.direction:<3} {flag:<8} {doc.display():<{width}}  {doc.summary}")
    return "\n".join(lines) + "\n"


@click.command("request")
@config_option
@click.argument("action")
@click.argument("payload", metavar="[JSON]", required=False, default="{}")
@click.option(
    "--timeout",
    type=click.FloatRange(0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the answer.",
)
def request_command(config_path: Path | None, action: str, payload: str, timeout: float) -> None:
    """Publish one ACTION request (e.g. ivh/list_sessions '{}') and print its response.

    Exits 0 on an ok response, 1 on an error response, 2 on bad usage or config, 3 when no
    answer comes (timeout, broker unreachable).
    """
    params = _parse_payload(payload)
    if action.count("/") != 1 or not all(action.split("/")):
        raise click.BadParameter("must be <service>/<action>", param_hint="ACTION")
    settings = load_or_exit(config_path)
    try:
        answer = asyncio.run(asyncio.wait_for(_request(settings, action, params), timeout))
    except TimeoutError:
        click.echo(f"no answer to {action} within {timeout:g} s: is the bridge running?", err=True)
        sys.exit(EXIT_NO_ANSWER)
    except BrokerError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_NO_ANSWER)
    click.echo(jsontext.dumps(answer, indent=2))
    sys.exit(0 if answer.get("status") == "ok" else EXIT_ERROR_RESPONSE)


def _parse_payload(payload: str) -> dict[str, Any]:
    try:
        params = jsontext.loads(payload)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="JSON") from exc
    if not isinstance(params, dict):
        raise click.BadParameter("must be a JSON object", param_hint="JSON")
    return params


async def _request(settings: Settings, action: str, params: dict[str, Any]) -> dict[str, Any]:
    async with ToolClient(settings.mqtt, name="cli") as client:
        return await request(client, Topics(settings.mqtt.base_topic), action, params)

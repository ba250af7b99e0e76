"""The environment forms of the config (docs/configuration.md, "Environment variables").

`TENCENT2MQTT_<SECTION>__<KEY>` sets a key; a list or a whole section takes JSON. A *secret*
key also has a `_FILE` form (Docker secrets) naming a file that holds it; other keys have none,
so `TENCENT2MQTT_MQTT__TLS_CA_FILE` is the key `mqtt.tls_ca_file` itself. Every variable is
checked against the model before pydantic-settings reads it, so a name that is no key and a
value that is not the JSON it must be are refused in one line each, naming the key.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

ENV_PREFIX = "TENCENT2MQTT_"
CONFIG_ENV = "TENCENT2MQTT_CONFIG"
FILE_SUFFIX = "_FILE"


def secret_keys(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The paths of every `SecretStr` key of `model`, e.g. ("desk", "secret_key")."""
    found: set[tuple[str, ...]] = set()
    for name, field in model.model_fields.items():
        sub = _submodel(field)
        if sub is not None:
            found |= secret_keys(sub, (*prefix, name))
        elif SecretStr in _types(field.annotation):
            found.add((*prefix, name))
    return found


def secret_file_path(name: str, model: type[BaseModel]) -> tuple[str, ...] | None:
    """The secret key a `..._FILE` variable names, or None when it is no secret's file form."""
    upper = name.upper()
    if not (upper.startswith(ENV_PREFIX) and upper.endswith(FILE_SUFFIX)):
        return None
    path = tuple(upper[len(ENV_PREFIX) : -len(FILE_SUFFIX)].lower().split("__"))
    return path if path in secret_keys(model) else None


def file_secrets(
    env: Mapping[str, str], model: type[BaseModel]
) -> tuple[dict[str, Any], list[str]]:
    """`TENCENT2MQTT_DESK__SECRET_KEY_FILE=/run/secrets/x` -> {"desk": {"secret_key": "..."}},
    and one problem line per file that cannot be read."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in env.items():
        path = secret_file_path(name, model)
        if path is None:
            continue
        try:
            secret = Path(value).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            problems.append(f"{'.'.join(path)}: cannot read {name}: {why}")
            continue
        node: dict[str, Any] = {path[-1]: secret}
        for key in reversed(path[:-1]):
            node = {key: node}
        merge(out, node)
    return out, problems


def env_problems(env: Mapping[str, str], model: type[BaseModel]) -> list[str]:
    """One line per variable that names no key, or whose value must be JSON and is not."""
    problems = []
    for name, value in sorted(env.items()):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        if secret_file_path(name, model) is not None:
            continue
        problem = _variable_problem(name, value, model)
        if problem:
            problems.append(problem)
    return problems


def _variable_problem(name: str, value: str, model: type[BaseModel]) -> str | None:
    path = name[len(ENV_PREFIX) :].lower().split("__")
    current: type[BaseModel] | None = model
    for depth, key in enumerate(path):
        where = ".".join(path[: depth + 1])
        field = current.model_fields.get(key) if current is not None else None
        if field is None:
            what = "unknown section" if depth == 0 else "unknown key"
            return f"{where}: {what} (from {name})"
        current = _submodel(field)
    if current is not None or _is_list(_field_at(model, path)):
        try:
            json.loads(value)
        except ValueError:
            example = '{"key": "value"}' if current is not None else '["s1", "s2"]'
            return f"{'.'.join(path)}: {name} must be JSON, e.g. {example}"
    return None


def _field_at(model: type[BaseModel], path: list[str]) -> FieldInfo:
    current: type[BaseModel] = model
    for key in path[:-1]:
        sub = _submodel(current.model_fields[key])
        assert sub is not None
        current = sub
    return current.model_fields[path[-1]]


def _submodel(field: FieldInfo) -> type[BaseModel] | None:
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def _is_list(field: FieldInfo) -> bool:
    return any(get_origin(t) in (tuple, list, set, frozenset) for t in _types(field.annotation))


def _types(annotation: Any) -> Iterator[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        yield from get_args(annotation)
    else:
        yield annotation


def merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Merge nested `extra` into `into`, the leaves of `extra` winning."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value

"""The action registry: `<service>/<action>` -> (payload model, handler).

Handlers are methods of feature objects, marked with `@action(...)`. The payload model comes
from the annotation of the handler's one parameter and is checked when the module is imported:
an untyped handler, or a parameter that is not a pydantic model, fails at import.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_type_hints

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Handler = Callable[[Any, Any], Awaitable[Any]]
ReplyPolicy = Literal["always", "when_asked"]
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])
_MARK = "__bridge_action__"


def _flag(value: Any) -> Any:
    # Tencent's own APIs use 0/1 for flags (e.g. Finish: 1), so take those; "yes" stays an error.
    return bool(value) if type(value) is int and value in (0, 1) else value


Flag = Annotated[bool, BeforeValidator(_flag)]
"""A strict boolean that also takes 0 and 1."""


class Payload(BaseModel):
    """Base of every request payload: frozen, strict about types, unknown fields refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class SessionPayload(Payload):
    """A payload that names one session (validated against docs/topics.md's pattern)."""

    session_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class Empty(Payload):
    """No parameters."""


@dataclass(frozen=True)
class ActionSpec:
    """One action: its key, payload model, unbound handler and reply policy."""

    key: str
    model: type[Payload]
    handler: Handler
    reply: ReplyPolicy
    summary: str

    @property
    def service(self) -> str:
        """The service part of the key."""
        return self.key.split("/", 1)[0]


@dataclass(frozen=True)
class BoundAction:
    """An action bound to the feature object that serves it."""

    spec: ActionSpec
    owner: object

    async def __call__(self, payload: Payload) -> Any:
        """Run the handler."""
        return await self.spec.handler(self.owner, payload)


def action(key: str, *, reply: ReplyPolicy = "always") -> Callable[[H], H]:
    """Mark a feature method as the handler of `key`; its parameter annotation is the model."""

    def mark(func: H) -> H:
        setattr(func, _MARK, _spec(key, func, reply))
        return func

    return mark


def _spec(key: str, func: Handler, reply: ReplyPolicy) -> ActionSpec:
    service, _, name = key.partition("/")
    if not service or not name or "/" in name:
        raise TypeError(f"action key {key!r} must be '<service>/<action>'")
    params = list(inspect.signature(func).parameters)
    if len(params) != 2:
        raise TypeError(f"handler of {key} must take (self, payload)")
    model = get_type_hints(func).get(params[1])
    if not (inspect.isclass(model) and issubclass(model, Payload)):
        raise TypeError(f"handler of {key} must annotate its payload with a Payload model")
    summary = (inspect.getdoc(func) or key).splitlines()[0]
    return ActionSpec(key=key, model=model, handler=func, reply=reply, summary=summary)


def specs_of(cls: type) -> Iterator[ActionSpec]:
    """Every action declared on a feature class."""
    for member in vars(cls).values():
        spec = getattr(member, _MARK, None)
        if isinstance(spec, ActionSpec):
            yield spec


class Registry:
    """Actions served by this bridge, by key."""

    def __init__(self) -> None:
        self._actions: dict[str, BoundAction] = {}

    def include(self, owner: object) -> None:
        """Register every action of a feature object; a duplicate key is an error."""
        for spec in specs_of(type(owner)):
            if spec.key in self._actions:
                raise ValueError(f"action {spec.key} is registered twice")
            self._actions[spec.key] = BoundAction(spec=spec, owner=owner)

    def get(self, key: str) -> BoundAction | None:
        """The action for `key`, if served."""
        return self._actions.get(key)

    def keys(self) -> list[str]:
        """Every served action key, sorted."""
        return sorted(self._actions)

"""Dependencies shared by the routes: the node, the caller's token, validated path ids."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request
from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from api.gate import CLAIMS, bearer
from orchestrator.auth import TokenClaims
from orchestrator.errors import AuthFailed
from orchestrator.node import Node


# The dependencies are async on purpose: they are cheap, and a sync dependency costs every
# request a hop through the thread pool.
async def get_node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


NodeDep = Annotated[Node, Depends(get_node)]


async def require_token(request: Request) -> TokenClaims:
    """The caller's token claims: verified by the gate in front of every route (``api.gate``),
    or here when a request did not pass through it."""
    claims: TokenClaims | None = getattr(request.state, CLAIMS, None)
    if claims is not None:
        return claims
    raw = request.headers.get("authorization")
    token = bearer(raw.encode("latin-1") if raw is not None else None)
    if token is None:
        raise AuthFailed("Unauthorized")
    node: Node = request.app.state.node
    return node.auth.check_token(token)


Caller = Annotated[TokenClaims, Depends(require_token)]


# Ids are positive and stored in signed 64-bit columns; 18 digits keep any literal in range.
ID_MAX_DIGITS = 18
ID_MAX = 10**ID_MAX_DIGITS - 1


def path_id(label: str, param: str = "id") -> Any:
    """A typed id path parameter ``{param}``: a positive integer of at most 18 digits.

    Anything else is refused with the reference's 400 ``Invalid <label> ID`` (see
    ``describe_validation``); the OpenAPI document declares it as a bounded integer.
    """

    def parse(raw: object) -> int:
        text = raw if isinstance(raw, str) else str(raw)
        if (len(text) > ID_MAX_DIGITS or not text.isascii() or not text.isdigit()
                or int(text) <= 0):
            raise PydanticCustomError("path_id", f"Invalid {label} ID")
        return int(text)

    schema = {"type": "integer", "minimum": 1, "maximum": ID_MAX}
    return Annotated[int, BeforeValidator(parse), WithJsonSchema(schema), Path(alias=param)]


ServiceId = path_id("service")
WorkflowId = path_id("workflow")
NodeId = path_id("node", "node_id")
ConnectionId = path_id("connection", "connection_id")
ExecutionId = path_id("workflow execution")
JobId = path_id("job execution")
ScheduleId = path_id("schedule", "schedule_id")
InterfaceRecordId = path_id("interface", "interface_id")


def describe_validation(errors: Any) -> str:
    """The 400 message for a request FastAPI refused: a bad path id first, else the body."""
    parts = []
    errors = list(errors)
    for err in errors:
        if tuple(err.get("loc", ()))[:1] == ("path",):
            return str(err.get("msg"))
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return "Invalid request body: expected a JSON object"
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "Invalid request body" + (": " + "; ".join(parts) if parts else "")

"""Dependencies shared by the routes: the node, the caller's token, validated path ids."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from orchestrator.auth import TokenClaims
from orchestrator.errors import AuthFailed, InvalidInput
from orchestrator.node import Node


# The dependencies are async on purpose: they are cheap, and a sync dependency costs every
# request a hop through the thread pool.
async def get_node(request: Request) -> Node:
    return request.app.state.node  # type: ignore[no-any-return]


NodeDep = Annotated[Node, Depends(get_node)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def require_token(request: Request) -> TokenClaims:
    token = bearer_token(request)
    if token is None:
        raise AuthFailed("Unauthorized")
    node: Node = request.app.state.node
    return node.auth.check_token(token)


Caller = Annotated[TokenClaims, Depends(require_token)]


def _path_id(param: str, label: str) -> Any:
    async def dependency(request: Request) -> int:
        raw = request.path_params.get(param, "")
        if not raw.isascii() or not raw.isdigit() or int(raw) <= 0 or len(raw) > 18:
            raise InvalidInput(f"Invalid {label} ID")
        return int(raw)

    dependency.__name__ = f"{param}_path_id"
    return Depends(dependency)


ServiceId = Annotated[int, _path_id("id", "service")]
WorkflowId = Annotated[int, _path_id("id", "workflow")]
NodeId = Annotated[int, _path_id("node_id", "node")]
ConnectionId = Annotated[int, _path_id("connection_id", "connection")]
ExecutionId = Annotated[int, _path_id("id", "workflow execution")]
JobId = Annotated[int, _path_id("id", "job execution")]


def describe_validation(errors: Any) -> str:
    parts = []
    errors = list(errors)
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return "Invalid request body: expected a JSON object"
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "Invalid request body" + (": " + "; ".join(parts) if parts else "")

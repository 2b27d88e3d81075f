"""Docker service endpoints: create from a registry, git or a local directory; details,
suggested interfaces, interfaces and configuration. Deletion is the generic DELETE."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, status

from api.deps import NodeDep, ServiceId, require_token
from api.routing import Router
from api.schemas import (
    POLICY_FIELDS,
    Body,
    PolicyIn,
    docker_details_out,
    service_out,
    suggested_out,
)
from orchestrator.errors import InvalidInput

router = Router(prefix="/api/services/docker", tags=["docker"],
                   dependencies=[Depends(require_token)])


class FromRegistry(PolicyIn):
    service_name: str
    image_name: str
    image_tag: str | None = None
    description: str = ""
    username: str | None = None
    password: str | None = None
    custom_interfaces: list[dict[str, Any]] | None = None


class FromGit(PolicyIn):
    service_name: str
    repo_url: str
    branch: str | None = None
    username: str | None = None
    password: str | None = None
    description: str = ""
    custom_interfaces: list[dict[str, Any]] | None = None


class FromLocal(PolicyIn):
    service_name: str
    local_path: str
    description: str = ""
    custom_interfaces: list[dict[str, Any]] | None = None


class ValidateGit(Body):
    repo_url: str | None = None
    username: str | None = None
    password: str | None = None


class InterfacesUpdate(Body):
    interfaces: list[dict[str, Any]]


class ConfigUpdate(Body):
    entrypoint: str | list[str] | None = None
    cmd: str | list[str] | None = None


def _created(created: Any, node: Any) -> dict[str, Any]:
    return {"success": True, "service": service_out(created.view, node.policy),
            "suggested_interfaces": suggested_out(created.suggested)}


def _fields(body: PolicyIn) -> dict[str, Any]:
    """A creation body as the domain takes it: its own fields, and the policy ones apart."""
    return {**body.model_dump(exclude=set(POLICY_FIELDS)), "policy": body.policy()}


@router.post("/from-registry", status_code=status.HTTP_201_CREATED)
async def from_registry(body: FromRegistry, node: NodeDep) -> dict[str, Any]:
    created = await node.docker_services.from_registry(**_fields(body))
    return _created(created, node)


@router.post("/from-git", status_code=status.HTTP_202_ACCEPTED)
async def from_git(body: FromGit, node: NodeDep) -> dict[str, Any]:
    op = node.docker_services.start_from_git(**_fields(body))
    return {"operation_id": op, "message": "Docker service creation started"}


@router.post("/from-local", status_code=status.HTTP_201_CREATED)
async def from_local(body: FromLocal, node: NodeDep) -> dict[str, Any]:
    created = await node.docker_services.from_local(**_fields(body))
    return _created(created, node)


@router.post("/validate-git")
async def validate_git(body: ValidateGit, node: NodeDep) -> dict[str, Any]:
    if not body.repo_url or not body.repo_url.strip():
        raise InvalidInput("repo_url is required")
    error = await node.docker_services.validate_git(body.repo_url, body.username, body.password)
    return {"valid": True} if error is None else {"valid": False, "error": error}


@router.get("/{id}/details")
def details(service_id: ServiceId, node: NodeDep) -> dict[str, Any]:
    return {"details": docker_details_out(node.docker_services.details(service_id))}


@router.get("/{id}/interfaces/suggested")
async def suggested(service_id: ServiceId, node: NodeDep) -> dict[str, Any]:
    return {"suggested_interfaces": suggested_out(await node.docker_services.suggested(service_id))}


@router.put("/{id}/interfaces")
def update_interfaces(service_id: ServiceId, body: InterfacesUpdate,
                      node: NodeDep) -> dict[str, Any]:
    node.docker_services.replace_interfaces(service_id, body.interfaces)
    return {"success": True, "message": "Interfaces updated successfully"}


@router.put("/{id}/config")
def update_config(service_id: ServiceId, body: ConfigUpdate, node: NodeDep) -> dict[str, Any]:
    node.docker_services.update_config(service_id, entrypoint=body.entrypoint, cmd=body.cmd)
    return {"success": True, "message": "Configuration updated successfully"}

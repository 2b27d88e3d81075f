"""Docker service endpoints: create from a registry, git or a local directory; details,
suggested interfaces, interfaces and configuration. Deletion is the generic DELETE."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, status

from api.deps import DockerServices, Policy, ServiceId, require_token
from api.responses import (
    DockerDetailsOne,
    DockerDetailsPublic,
    GitValidation,
    OperationStarted,
    ServiceCreated,
    ServicePublic,
    Success,
    SuggestedInterface,
    Suggestions,
)
from api.routing import Router
from api.schemas import (
    POLICY_FIELDS,
    DockerConfigUpdate,
    DockerFromGit,
    DockerFromLocal,
    DockerFromRegistry,
    InterfacesUpdate,
    PolicyIn,
    ValidateGit,
)
from orchestrator.errors import InvalidInput
from orchestrator.peer_policy import PeerPolicy

router = Router(prefix="/api/services/docker", tags=["docker"],
                dependencies=[Depends(require_token)])


def _created(created: Any, policy: PeerPolicy) -> ServiceCreated:
    return ServiceCreated(service=ServicePublic.of(created.view, policy),
                          suggested_interfaces=_suggestions(created.suggested))


def _suggestions(specs: list[Any]) -> list[SuggestedInterface]:
    return [SuggestedInterface.model_validate(spec) for spec in specs]


def _fields(body: PolicyIn) -> dict[str, Any]:
    """A creation body as the domain takes it: its own fields, and the policy ones apart."""
    return {**body.model_dump(exclude=set(POLICY_FIELDS)), "policy": body.policy()}


@router.post("/from-registry", status_code=status.HTTP_201_CREATED)
async def from_registry(body: DockerFromRegistry, docker: DockerServices,
                        policy: Policy) -> ServiceCreated:
    created = await docker.from_registry(**_fields(body))
    return _created(created, policy)


@router.post("/from-git", status_code=status.HTTP_202_ACCEPTED)
async def from_git(body: DockerFromGit, docker: DockerServices) -> OperationStarted:
    op = docker.start_from_git(**_fields(body))
    return OperationStarted(operation_id=op, message="Docker service creation started")


@router.post("/from-local", status_code=status.HTTP_201_CREATED)
async def from_local(body: DockerFromLocal, docker: DockerServices,
                     policy: Policy) -> ServiceCreated:
    created = await docker.from_local(**_fields(body))
    return _created(created, policy)


@router.post("/validate-git")
async def validate_git(body: ValidateGit, docker: DockerServices) -> GitValidation:
    if not body.repo_url or not body.repo_url.strip():
        raise InvalidInput("repo_url is required")
    error = await docker.validate_git(body.repo_url, body.username, body.password)
    return GitValidation(valid=True) if error is None else GitValidation(valid=False, error=error)


@router.get("/{id}/details")
def details(service_id: ServiceId, docker: DockerServices) -> DockerDetailsOne:
    found = docker.details(service_id)
    return DockerDetailsOne(details=DockerDetailsPublic.model_validate(found))


@router.get("/{id}/interfaces/suggested")
async def suggested(service_id: ServiceId, docker: DockerServices) -> Suggestions:
    specs = await docker.suggested(service_id)
    return Suggestions(suggested_interfaces=_suggestions(specs))


@router.put("/{id}/interfaces")
def update_interfaces(service_id: ServiceId, body: InterfacesUpdate,
                      docker: DockerServices) -> Success:
    docker.replace_interfaces(service_id, body.interfaces)
    return Success(message="Interfaces updated successfully")


@router.put("/{id}/config")
def update_config(service_id: ServiceId, body: DockerConfigUpdate,
                  docker: DockerServices) -> Success:
    docker.update_config(service_id, entrypoint=body.entrypoint, cmd=body.cmd)
    return Success(message="Configuration updated successfully")

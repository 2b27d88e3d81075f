"""Standalone service endpoints (API reference: "Standalone Services")."""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from api.deps import Policy, ServiceId, StandaloneServices, require_token
from api.responses import (
    ServiceCreated,
    ServicePublic,
    StandaloneDetailsOne,
    StandaloneDetailsPublic,
    Success,
    SuggestedInterface,
)
from api.routing import Router
from api.schemas import StandaloneFromGit, StandaloneFromLocal, StandaloneRun
from orchestrator.peer_policy import PeerPolicy

router = Router(prefix="/api/services/standalone", tags=["standalone"],
                dependencies=[Depends(require_token)])


def _created(view: Any, suggested: list[Any], policy: PeerPolicy) -> ServiceCreated:
    return ServiceCreated(
        service=ServicePublic.of(view, policy),
        suggested_interfaces=[SuggestedInterface.model_validate(s) for s in suggested])


@router.post("/from-local")
def from_local(body: StandaloneFromLocal, standalone: StandaloneServices,
               policy: Policy) -> ServiceCreated:
    view, suggested = standalone.create_from_local(
        name=body.service_name, description=body.description, config=body.config())
    return _created(view, suggested, policy)


@router.post("/from-git")
async def from_git(body: StandaloneFromGit, standalone: StandaloneServices,
                   policy: Policy) -> ServiceCreated:
    view, suggested = await standalone.create_from_git(
        name=body.service_name, description=body.description, source=body.source(),
        config=body.config())
    return _created(view, suggested, policy)


@router.get("/{id}/details")
def details(service_id: ServiceId, standalone: StandaloneServices,
            policy: Policy) -> StandaloneDetailsOne:
    view = standalone.details(service_id)
    assert view.standalone is not None
    return StandaloneDetailsOne(service=ServicePublic.of(view, policy),
                                details=StandaloneDetailsPublic.model_validate(view.standalone))


@router.post("/{id}/finalize")
def finalize(service_id: ServiceId, body: StandaloneRun, standalone: StandaloneServices,
             policy: Policy) -> ServiceCreated:
    view, suggested = standalone.finalize(service_id, body.config())
    return _created(view, suggested, policy)


@router.delete("/{id}")
def delete(service_id: ServiceId, standalone: StandaloneServices) -> Success:
    standalone.delete(service_id)
    return Success(message="Service deleted successfully")

"""Standalone service endpoints (API reference: "Standalone Services")."""

from __future__ import annotations

from typing import Any

from fastapi import Depends
from pydantic import Field

from api.deps import NodeDep, ServiceId, require_token
from api.routing import Router
from api.schemas import PolicyIn, service_out, standalone_details_out, suggested_out
from orchestrator.services.standalone_services import GitSource, RunConfig

router = Router(prefix="/api/services/standalone", tags=["standalone"],
                   dependencies=[Depends(require_token)])


class RunBody(PolicyIn):
    executable_path: str
    arguments: list[str] = Field(default_factory=list)
    working_directory: str = ""
    environment_variables: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: int | None = None
    run_as_user: str = ""
    capabilities: dict[str, Any] = Field(default_factory=dict)
    custom_interfaces: list[dict[str, Any]] | None = None

    def config(self) -> RunConfig:
        return RunConfig(
            executable_path=self.executable_path,
            arguments=self.arguments,
            working_directory=self.working_directory or "",
            environment_variables=self.environment_variables,
            timeout_seconds=self.timeout_seconds,
            run_as_user=self.run_as_user or "",
            capabilities=self.capabilities,
            custom_interfaces=self.custom_interfaces,
            policy=self.policy(),
        )


class FromLocalBody(RunBody):
    service_name: str
    description: str = ""


class FromGitBody(RunBody):
    service_name: str
    repo_url: str
    branch: str | None = None
    build_command: str = ""
    username: str = ""
    password: str = Field(default="", repr=False)
    description: str = ""

    def source(self) -> GitSource:
        return GitSource(self.repo_url, self.branch, self.username or None,
                         self.password or None, self.build_command or "")


def _created(view: Any, suggested: Any, node: Any) -> dict[str, Any]:
    return {"success": True, "service": service_out(view, node.policy),
            "suggested_interfaces": suggested_out(suggested)}


@router.post("/from-local")
def from_local(body: FromLocalBody, node: NodeDep) -> dict[str, Any]:
    view, suggested = node.standalone.create_from_local(
        name=body.service_name, description=body.description, config=body.config())
    return _created(view, suggested, node)


@router.post("/from-git")
async def from_git(body: FromGitBody, node: NodeDep) -> dict[str, Any]:
    view, suggested = await node.standalone.create_from_git(
        name=body.service_name, description=body.description, source=body.source(),
        config=body.config())
    return _created(view, suggested, node)


@router.get("/{id}/details")
def details(service_id: ServiceId, node: NodeDep) -> dict[str, Any]:
    view = node.standalone.details(service_id)
    assert view.standalone is not None
    return {"success": True, "service": service_out(view, node.policy),
            "details": standalone_details_out(view.standalone)}


@router.post("/{id}/finalize")
def finalize(service_id: ServiceId, body: RunBody, node: NodeDep) -> dict[str, Any]:
    view, suggested = node.standalone.finalize(service_id, body.config())
    return _created(view, suggested, node)


@router.delete("/{id}")
def delete(service_id: ServiceId, node: NodeDep) -> dict[str, Any]:
    node.standalone.delete(service_id)
    return {"success": True, "message": "Service deleted successfully"}

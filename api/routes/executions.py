"""Workflow execution instances and job executions."""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from api.deps import ExecutionId, JobId, NodeDep, require_token
from api.routing import Router
from api.schemas import execution_out, job_interface_out, job_out

router = Router(prefix="/api", tags=["executions"], dependencies=[Depends(require_token)])


@router.get("/workflow-executions/{id}/status")
def execution_status(execution_id: ExecutionId, node: NodeDep) -> dict[str, Any]:
    return execution_out(node.executions.execution(execution_id))


@router.get("/workflow-executions/{id}/jobs")
def execution_jobs(execution_id: ExecutionId, node: NodeDep) -> dict[str, Any]:
    jobs = [job_out(j) for j in node.executions.jobs(execution_id)]
    return {"jobs": jobs, "total": len(jobs)}


@router.get("/job-executions/{id}/interfaces")
def job_interfaces(job_id: JobId, node: NodeDep) -> dict[str, Any]:
    items = [job_interface_out(i) for i in node.executions.job_interfaces(job_id)]
    return {"interfaces": items, "total": len(items)}

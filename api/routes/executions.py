"""Workflow execution instances and job executions."""

from __future__ import annotations

from fastapi import Depends

from api.deps import ExecutionId, ExecutionRecords, JobId, require_token
from api.responses import (
    ExecutionStatus,
    JobInterfaceList,
    JobInterfacePublic,
    JobList,
    JobPublic,
)
from api.routing import Router

router = Router(prefix="/api", tags=["executions"], dependencies=[Depends(require_token)])


@router.get("/workflow-executions/{id}/status")
def execution_status(execution_id: ExecutionId, records: ExecutionRecords) -> ExecutionStatus:
    return ExecutionStatus.of(records.execution(execution_id), records.job_list(execution_id),
                              records.delivered(execution_id))


@router.get("/workflow-executions/{id}/jobs")
def execution_jobs(execution_id: ExecutionId, records: ExecutionRecords) -> JobList:
    jobs = [JobPublic.model_validate(j) for j in records.job_list(execution_id)]
    return JobList(jobs=jobs, total=len(jobs))


@router.get("/job-executions/{id}/interfaces")
def job_interfaces(job_id: JobId, records: ExecutionRecords) -> JobInterfaceList:
    items = [JobInterfacePublic.model_validate(i) for i in records.job_interfaces(job_id)]
    return JobInterfaceList(interfaces=items, total=len(items))

"""Workflow execution instances and job executions."""

from __future__ import annotations

from typing import Any

from fastapi import Depends

from api.deps import ExecutionId, ExecutionRecords, JobId, require_token
from api.responses import (
    ExecutionStatus,
    JobInterfaceList,
    JobInterfacePublic,
    JobList,
    JobPublic,
    ReceiptChain,
)
from api.routing import Router
from orchestrator.errors import NotFound

router = Router(prefix="/api", tags=["executions"], dependencies=[Depends(require_token)])


@router.get("/workflow-executions/{id}/status")
def execution_status(execution_id: ExecutionId, records: ExecutionRecords) -> ExecutionStatus:
    return ExecutionStatus.of(records.execution(execution_id), records.job_list(execution_id),
                              records.delivered(execution_id), records.resumed_by(execution_id))


@router.get("/workflow-executions/{id}/jobs")
def execution_jobs(execution_id: ExecutionId, records: ExecutionRecords) -> JobList:
    jobs = [JobPublic.model_validate(j) for j in records.job_list(execution_id)]
    return JobList(jobs=jobs, total=len(jobs))


@router.get("/workflow-executions/{id}/receipts")
def execution_receipts(execution_id: ExecutionId, records: ExecutionRecords) -> ReceiptChain:
    receipts = [dict(j.receipt or {}) for j in records.receipts(execution_id)]
    return ReceiptChain(execution_id=execution_id, receipts=receipts, total=len(receipts))


@router.get("/job-executions/{id}/receipt",
            responses={200: {"description": "The job's receipt: a DSSE envelope whose payload "
                             "is an in-toto Statement v1"}})
def job_receipt(job_id: JobId, records: ExecutionRecords) -> dict[str, Any]:
    receipt = records.job(job_id).receipt
    if receipt is None:
        raise NotFound("Receipt not found: the job has not completed, or ran without one")
    return dict(receipt)


@router.get("/job-executions/{id}/interfaces")
def job_interfaces(job_id: JobId, records: ExecutionRecords) -> JobInterfaceList:
    items = [JobInterfacePublic.model_validate(i) for i in records.job_interfaces(job_id)]
    return JobInterfaceList(interfaces=items, total=len(items))

"""Running workflows: execute, cancel, cron schedules, and the content of large job outputs.

Outputs: ``GET /api/job-executions/{id}/interfaces`` returns, for STDOUT/STDERR/LOGS, the text
itself as ``value`` up to ``output_inline_limit`` bytes (64 KiB by default, RN_OUTPUT_INLINE_LIMIT);
beyond it ``value`` is null and ``GET /api/job-executions/{id}/interfaces/{interface_id}/content``
(``interface_id`` = the ``id`` of that interface record) streams the bytes (a MOUNT output is a
tar).
"""

from __future__ import annotations

from fastapi import Depends, status
from fastapi.responses import FileResponse

from api.deps import (
    Artifacts,
    ExecutionId,
    ExecutionRecords,
    Executions,
    InterfaceRecordId,
    JobId,
    PlanPreview,
    ScheduleId,
    Schedules,
    WorkflowId,
    require_token,
)
from api.responses import (
    ExecutionCancelled,
    ExecutionResumed,
    ExecutionStarted,
    Message,
    PlannedNode,
    ScheduleCreated,
    ScheduleList,
    SchedulePublic,
    ScheduleRunRequested,
    WorkflowPlanPreview,
)
from api.routing import Router
from api.schemas import ScheduleCreate
from orchestrator.errors import NotFound

router = Router(prefix="/api", tags=["workflow runs"], dependencies=[Depends(require_token)])


@router.post("/workflows/{id}/execute", status_code=status.HTTP_202_ACCEPTED)
async def execute_workflow(workflow_id: WorkflowId, executions: Executions) -> ExecutionStarted:
    execution = executions.execute(workflow_id)
    return ExecutionStarted(
        message="Workflow execution started - validation and execution in progress",
        workflow_id=workflow_id,
        note=f"Check execution status via GET /api/workflow-executions/{execution.id}/status",
        execution_id=execution.id,
    )


@router.post("/workflows/{id}/plan")
async def plan_workflow(workflow_id: WorkflowId, preview: PlanPreview) -> WorkflowPlanPreview:
    _, nodes = await preview.preview(workflow_id)
    moved = [n.bytes_in for n in nodes]
    return WorkflowPlanPreview(
        workflow_id=workflow_id,
        nodes=[PlannedNode(**{k: getattr(n, k) for k in PlannedNode.model_fields})
               for n in nodes],
        bytes_between_peers=sum(b for b in moved if b is not None)
        if all(b is not None for b in moved) else None)


@router.post("/workflow-executions/{id}/resume", status_code=status.HTTP_202_ACCEPTED)
async def resume_execution(execution_id: ExecutionId,
                           executions: Executions) -> ExecutionResumed:
    execution = executions.resume(execution_id)
    return ExecutionResumed(
        message="Execution resumed - completed jobs are reused, the rest run",
        workflow_id=execution.workflow_id, resumed_from=execution_id,
        note=f"Check execution status via GET /api/workflow-executions/{execution.id}/status",
        execution_id=int(execution.id or 0))


@router.post("/workflow-executions/{id}/cancel")
async def cancel_execution(execution_id: ExecutionId,
                           executions: Executions) -> ExecutionCancelled:
    execution = await executions.cancel(execution_id)
    return ExecutionCancelled(message="Execution cancelled", status=execution.status)


@router.get("/workflows/{id}/schedules")
def list_schedules(workflow_id: WorkflowId, schedules: Schedules) -> ScheduleList:
    items = [SchedulePublic.model_validate(s) for s in schedules.list(workflow_id)]
    return ScheduleList(schedules=items, total=len(items))


@router.post("/workflows/{id}/schedules", status_code=status.HTTP_201_CREATED)
async def create_schedule(workflow_id: WorkflowId, body: ScheduleCreate,
                          schedules: Schedules) -> ScheduleCreated:
    schedule = await schedules.create(workflow_id, body.cron, body.timezone, body.active)
    return ScheduleCreated(schedule=SchedulePublic.model_validate(schedule),
                           message="Schedule created successfully")


@router.delete("/workflows/{id}/schedules/{schedule_id}")
async def delete_schedule(workflow_id: WorkflowId, schedule_id: ScheduleId,
                          schedules: Schedules) -> Message:
    await schedules.delete(workflow_id, schedule_id)
    return Message(message="Schedule deleted successfully")


@router.post("/workflows/{id}/schedules/{schedule_id}/run", status_code=status.HTTP_202_ACCEPTED)
async def run_schedule_now(workflow_id: WorkflowId, schedule_id: ScheduleId,
                           schedules: Schedules) -> ScheduleRunRequested:
    flow_run_id = await schedules.run_now(workflow_id, schedule_id)
    return ScheduleRunRequested(message="Scheduled run requested", flow_run_id=flow_run_id)


@router.get("/job-executions/{id}/interfaces/{interface_id}/content",
            response_class=FileResponse,
            responses={200: {"description": "The output's bytes (a MOUNT output: a tar)",
                             "content": {"application/octet-stream": {
                                 "schema": {"type": "string", "format": "binary"}}}}})
def interface_content(job_id: JobId, interface_id: InterfaceRecordId,
                      records: ExecutionRecords, artifacts: Artifacts) -> FileResponse:
    record = records.job_interface(job_id, interface_id)
    if not record.artifact_hash or not artifacts.has(record.artifact_hash):
        raise NotFound("Interface content not found")
    return FileResponse(artifacts.path(record.artifact_hash),
                        media_type="application/octet-stream",
                        filename=record.delivered_as
                        or f"job-{job_id}-{record.interface_type.lower()}-{record.id}")

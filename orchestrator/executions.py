"""Execution records as the API reads them: workflow executions, their jobs and job interfaces.

The workflow engine writes these rows; this module reads them.
"""

from __future__ import annotations

from sqlmodel import Session, col, select

from orchestrator.db import Database
from orchestrator.errors import NotFound
from orchestrator.models import (
    JobExecution,
    JobExecutionInterface,
    Workflow,
    WorkflowExecution,
)


class ExecutionRecords:
    def __init__(self, db: Database) -> None:
        self.db = db

    def for_workflow(self, workflow_id: int) -> list[WorkflowExecution]:
        with self.db.session() as s:
            _require_workflow(s, workflow_id)
            return list(s.exec(select(WorkflowExecution)
                               .where(WorkflowExecution.workflow_id == workflow_id)
                               .order_by(col(WorkflowExecution.id))))

    def jobs_for_workflow(self, workflow_id: int) -> list[JobExecution]:
        with self.db.session() as s:
            _require_workflow(s, workflow_id)
            return list(s.exec(select(JobExecution)
                               .where(JobExecution.workflow_id == workflow_id)
                               .order_by(col(JobExecution.id))))

    def execution(self, execution_id: int) -> WorkflowExecution:
        with self.db.session() as s:
            execution = s.get(WorkflowExecution, execution_id)
            if execution is None:
                raise NotFound("Workflow execution not found")
            return execution

    def jobs(self, execution_id: int) -> list[JobExecution]:
        with self.db.session() as s:
            if s.get(WorkflowExecution, execution_id) is None:
                raise NotFound("Workflow execution not found")
            return list(s.exec(select(JobExecution)
                               .where(JobExecution.workflow_execution_id == execution_id)
                               .order_by(col(JobExecution.id))))

    def job(self, job_id: int) -> JobExecution:
        with self.db.session() as s:
            job = s.get(JobExecution, job_id)
            if job is None:
                raise NotFound("Job execution not found")
            return job

    def job_interfaces(self, job_id: int) -> list[JobExecutionInterface]:
        with self.db.session() as s:
            if s.get(JobExecution, job_id) is None:
                raise NotFound("Job execution not found")
            return list(s.exec(select(JobExecutionInterface)
                               .where(JobExecutionInterface.job_execution_id == job_id)
                               .order_by(col(JobExecutionInterface.id))))


def _require_workflow(s: Session, workflow_id: int) -> Workflow:
    workflow = s.get(Workflow, workflow_id)
    if workflow is None:
        raise NotFound("Workflow not found")
    return workflow

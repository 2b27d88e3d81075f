"""Workflows: the definition (nodes, connections, UI state) and its execution records."""

from __future__ import annotations

from fastapi import Depends, status

from api.deps import ConnectionId, ExecutionRecords, NodeId, WorkflowId, Workflows, require_token
from api.responses import (
    ConnectionCreated,
    ConnectionList,
    ExecutionList,
    ExecutionPublic,
    JobPublic,
    JobRecordList,
    JobSummary,
    JobSummaryList,
    Message,
    NodeList,
    ReferenceUIState,
    Success,
    UIState,
    WorkflowList,
    WorkflowListItem,
    WorkflowNodePublic,
    WorkflowPublic,
    ui_state_answer,
)
from api.routing import Router
from api.schemas import (
    UI_ONLY_STATE_KEYS,
    UI_STATE_DEFAULTS,
    ConnectionCreate,
    ConnectionUpdate,
    GuiPropsUpdate,
    NodeConfigUpdate,
    NodeCreate,
    UIStateUpdate,
    WorkflowCreate,
    WorkflowUpdate,
)

router = Router(prefix="/api/workflows", tags=["workflows"],
                dependencies=[Depends(require_token)])


@router.get("")
def list_workflows(workflows: Workflows, records: ExecutionRecords) -> WorkflowList:
    statuses = records.latest_statuses()
    items = [WorkflowListItem.model_validate(w).model_copy(update={
        "status": statuses[w.id].lower() if w.id in statuses else None})
        for w in workflows.list()]
    return WorkflowList(workflows=items, total=len(items))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_workflow(body: WorkflowCreate, workflows: Workflows) -> WorkflowPublic:
    created = workflows.create(body.name, body.description, body.definition)
    return WorkflowPublic.model_validate(created)


@router.get("/{id}")
def get_workflow(workflow_id: WorkflowId, workflows: Workflows) -> WorkflowPublic:
    return WorkflowPublic.model_validate(workflows.get(workflow_id))


@router.put("/{id}")
def update_workflow(workflow_id: WorkflowId, body: WorkflowUpdate,
                    workflows: Workflows) -> WorkflowPublic:
    return WorkflowPublic.model_validate(workflows.update(
        workflow_id, body.name, body.description, body.definition))


@router.delete("/{id}")
def delete_workflow(workflow_id: WorkflowId, workflows: Workflows) -> Message:
    workflows.delete(workflow_id)
    return Message(message="Workflow deleted successfully")


# -- nodes -------------------------------------------------------------------------------------
@router.get("/{id}/nodes")
def list_nodes(workflow_id: WorkflowId, workflows: Workflows) -> NodeList:
    items = [WorkflowNodePublic.of(n) for n in workflows.nodes(workflow_id)]
    return NodeList(nodes=items, total=len(items))


@router.post("/{id}/nodes", status_code=status.HTTP_201_CREATED)
def add_node(workflow_id: WorkflowId, body: NodeCreate, workflows: Workflows) -> WorkflowNodePublic:
    return WorkflowNodePublic.of(workflows.add_node(workflow_id, **body.node_fields()))


@router.delete("/{id}/nodes/{node_id}")
def delete_node(workflow_id: WorkflowId, node_id: NodeId, workflows: Workflows) -> Message:
    workflows.delete_node(workflow_id, node_id)
    return Message(message="Node deleted successfully")


@router.put("/{id}/nodes/{node_id}/gui-props")
def update_gui_props(workflow_id: WorkflowId, node_id: NodeId, body: GuiPropsUpdate,
                     workflows: Workflows) -> Success:
    workflows.update_node(workflow_id, node_id, gui_props=body.merged_into)
    return Success(message="GUI properties updated")


@router.put("/{id}/nodes/{node_id}/config")
def update_node_config(workflow_id: WorkflowId, node_id: NodeId, body: NodeConfigUpdate,
                       workflows: Workflows) -> Success:
    workflows.update_node(workflow_id, node_id, config=body.merged_into)
    return Success(message="Node configuration updated")


# -- connections -------------------------------------------------------------------------------
@router.get("/{id}/connections")
def list_connections(workflow_id: WorkflowId, workflows: Workflows) -> ConnectionList:
    carded = {int(n.id or 0) for n in workflows.nodes(workflow_id) if n.card}
    return ConnectionList.of(workflows.connections(workflow_id), carded)


@router.post("/{id}/connections", status_code=status.HTTP_201_CREATED)
def add_connection(workflow_id: WorkflowId, body: ConnectionCreate,
                   workflows: Workflows) -> ConnectionCreated:
    # The UI offers every output of a card at once: a second one into the same STDIN is
    # refused here, where the editor shows it, rather than when the workflow runs.
    return ConnectionCreated.of(workflows.add_connection(workflow_id, body.ends(),
                                                         one_source=body.in_ui_names),
                                ui=body.in_ui_names)


@router.put("/{id}/connections/{connection_id}")
def update_connection(workflow_id: WorkflowId, connection_id: ConnectionId,
                      body: ConnectionUpdate, workflows: Workflows) -> Success:
    workflows.update_connection(workflow_id, connection_id, body.ends())
    return Success(message="Connection updated")


@router.delete("/{id}/connections/{connection_id}")
def delete_connection(workflow_id: WorkflowId, connection_id: ConnectionId,
                      workflows: Workflows) -> Message:
    workflows.delete_connection(workflow_id, connection_id)
    return Message(message="Connection deleted successfully")


# -- UI state ----------------------------------------------------------------------------------
@router.get("/{id}/ui-state")
def get_ui_state(workflow_id: WorkflowId,
                 workflows: Workflows) -> UIState | ReferenceUIState:
    return ui_state_answer(workflows.ui_state(workflow_id), UI_STATE_DEFAULTS,
                           UI_ONLY_STATE_KEYS)


@router.put("/{id}/ui-state")
def set_ui_state(workflow_id: WorkflowId, body: UIStateUpdate, workflows: Workflows) -> Success:
    workflows.set_ui_state(workflow_id, body.merged_into)
    return Success(message="UI state updated")


# -- execution records -------------------------------------------------------------------------
@router.get("/{id}/jobs")
def legacy_jobs(workflow_id: WorkflowId, records: ExecutionRecords) -> JobSummaryList:
    jobs = [JobSummary.model_validate(j)
            for j in records.jobs_for_workflow(workflow_id)]
    return JobSummaryList(jobs=jobs, total=len(jobs))


@router.get("/{id}/execution-instances")
def execution_instances(workflow_id: WorkflowId, records: ExecutionRecords) -> ExecutionList:
    items = [ExecutionPublic.model_validate(e)
             for e in records.for_workflow(workflow_id)]
    return ExecutionList(executions=items, total=len(items))


@router.get("/{id}/executions")
def legacy_executions(workflow_id: WorkflowId, records: ExecutionRecords) -> JobRecordList:
    items = [JobPublic.model_validate(j)
             for j in records.jobs_for_workflow(workflow_id)]
    return JobRecordList(executions=items, total=len(items))

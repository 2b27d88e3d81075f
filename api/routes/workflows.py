"""Workflows: the definition (nodes, connections, UI state) and its execution records."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, status

from api.deps import ConnectionId, NodeDep, NodeId, WorkflowId, require_token
from api.routing import Router
from api.schemas import (
    ConnectionCreate,
    ConnectionUpdate,
    GuiPropsUpdate,
    NodeConfigUpdate,
    NodeCreate,
    UIStateUpdate,
    WorkflowCreate,
    WorkflowUpdate,
    connection_out,
    execution_out,
    iso,
    job_out,
    node_out,
    workflow_out,
)

router = Router(prefix="/api/workflows", tags=["workflows"],
                dependencies=[Depends(require_token)])


@router.get("")
def list_workflows(node: NodeDep) -> dict[str, Any]:
    items = [workflow_out(w) for w in node.workflows.list()]
    return {"workflows": items, "total": len(items)}


@router.post("", status_code=status.HTTP_201_CREATED)
def create_workflow(body: WorkflowCreate, node: NodeDep) -> dict[str, Any]:
    return workflow_out(node.workflows.create(body.name, body.description, body.definition))


@router.get("/{id}")
def get_workflow(workflow_id: WorkflowId, node: NodeDep) -> dict[str, Any]:
    return workflow_out(node.workflows.get(workflow_id))


@router.put("/{id}")
def update_workflow(workflow_id: WorkflowId, body: WorkflowUpdate,
                    node: NodeDep) -> dict[str, Any]:
    return workflow_out(node.workflows.update(workflow_id, body.name, body.description,
                                              body.definition))


@router.delete("/{id}")
def delete_workflow(workflow_id: WorkflowId, node: NodeDep) -> dict[str, Any]:
    node.workflows.delete(workflow_id)
    return {"message": "Workflow deleted successfully"}


# -- nodes -------------------------------------------------------------------------------------
@router.get("/{id}/nodes")
def list_nodes(workflow_id: WorkflowId, node: NodeDep) -> dict[str, Any]:
    items = [node_out(n) for n in node.workflows.nodes(workflow_id)]
    return {"nodes": items, "total": len(items)}


@router.post("/{id}/nodes", status_code=status.HTTP_201_CREATED)
def add_node(workflow_id: WorkflowId, body: NodeCreate, node: NodeDep) -> dict[str, Any]:
    return node_out(node.workflows.add_node(workflow_id, **body.model_dump()))


@router.delete("/{id}/nodes/{node_id}")
def delete_node(workflow_id: WorkflowId, node_id: NodeId, node: NodeDep) -> dict[str, Any]:
    node.workflows.delete_node(workflow_id, node_id)
    return {"message": "Node deleted successfully"}


@router.put("/{id}/nodes/{node_id}/gui-props")
def update_gui_props(workflow_id: WorkflowId, node_id: NodeId, body: GuiPropsUpdate,
                     node: NodeDep) -> dict[str, Any]:
    node.workflows.update_node(workflow_id, node_id, gui_props=body.gui_props)
    return {"success": True, "message": "GUI properties updated"}


@router.put("/{id}/nodes/{node_id}/config")
def update_node_config(workflow_id: WorkflowId, node_id: NodeId, body: NodeConfigUpdate,
                       node: NodeDep) -> dict[str, Any]:
    node.workflows.update_node(workflow_id, node_id, config=body.config)
    return {"success": True, "message": "Node configuration updated"}


# -- connections -------------------------------------------------------------------------------
@router.get("/{id}/connections")
def list_connections(workflow_id: WorkflowId, node: NodeDep) -> dict[str, Any]:
    items = [connection_out(c) for c in node.workflows.connections(workflow_id)]
    return {"connections": items, "total": len(items)}


@router.post("/{id}/connections", status_code=status.HTTP_201_CREATED)
def add_connection(workflow_id: WorkflowId, body: ConnectionCreate,
                   node: NodeDep) -> dict[str, Any]:
    return connection_out(node.workflows.add_connection(workflow_id, body.model_dump()))


@router.put("/{id}/connections/{connection_id}")
def update_connection(workflow_id: WorkflowId, connection_id: ConnectionId,
                      body: ConnectionUpdate, node: NodeDep) -> dict[str, Any]:
    node.workflows.update_connection(workflow_id, connection_id, body.model_dump())
    return {"success": True, "message": "Connection updated"}


@router.delete("/{id}/connections/{connection_id}")
def delete_connection(workflow_id: WorkflowId, connection_id: ConnectionId,
                      node: NodeDep) -> dict[str, Any]:
    node.workflows.delete_connection(workflow_id, connection_id)
    return {"message": "Connection deleted successfully"}


# -- UI state ----------------------------------------------------------------------------------
@router.get("/{id}/ui-state")
def get_ui_state(workflow_id: WorkflowId, node: NodeDep) -> dict[str, Any]:
    return {"ui_state": node.workflows.ui_state(workflow_id)}


@router.put("/{id}/ui-state")
def set_ui_state(workflow_id: WorkflowId, body: UIStateUpdate, node: NodeDep) -> dict[str, Any]:
    node.workflows.set_ui_state(workflow_id, body.ui_state)
    return {"success": True, "message": "UI state updated"}


# -- execution records -------------------------------------------------------------------------
@router.get("/{id}/jobs")
def legacy_jobs(workflow_id: WorkflowId, node: NodeDep) -> dict[str, Any]:
    jobs = [{"id": j.id, "workflow_id": j.workflow_id, "status": j.status,
             "created_at": iso(j.created_at)}
            for j in node.executions.jobs_for_workflow(workflow_id)]
    return {"jobs": jobs, "total": len(jobs)}


@router.get("/{id}/execution-instances")
def execution_instances(workflow_id: WorkflowId, node: NodeDep) -> dict[str, Any]:
    items = [execution_out(e) for e in node.executions.for_workflow(workflow_id)]
    return {"executions": items, "total": len(items)}


@router.get("/{id}/executions")
def legacy_executions(workflow_id: WorkflowId, node: NodeDep) -> dict[str, Any]:
    items = [job_out(j) for j in node.executions.jobs_for_workflow(workflow_id)]
    return {"executions": items, "total": len(items)}

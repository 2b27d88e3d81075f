"""Generic service endpoints, for every service type."""

from __future__ import annotations

from fastapi import Depends, status

from api.deps import Policy, ServiceId, Services, require_token
from api.responses import (
    DataDetailsPublic,
    InterfaceList,
    InterfacePublic,
    Message,
    Passphrase,
    ServiceList,
    ServiceOne,
    ServicePublic,
    ServiceSaved,
    StatusChanged,
)
from api.routing import Router
from api.schemas import POLICY_FIELDS, ServiceCreate, ServicePricing, ServiceUpdate, StatusUpdate
from orchestrator.errors import InvalidInput
from orchestrator.registry import generic_type, parse_pricing, parse_status
from orchestrator.states import ServiceStatus, ServiceType

router = Router(prefix="/api/services", tags=["services"],
                dependencies=[Depends(require_token)])


@router.get("")
def list_services(registry: Services, policy: Policy) -> ServiceList:
    services = [ServicePublic.of(v, policy) for v in registry.list()]
    return ServiceList(services=services, total=len(services))


@router.post("", status_code=status.HTTP_201_CREATED)
def create_service(body: ServiceCreate, registry: Services, policy: Policy) -> ServiceSaved:
    service_type = generic_type(body.type)
    service_status = parse_status(body.status)
    # An INACTIVE standalone service may wait for its executable: the original web UI makes
    # one, then uploads the file into it and finalizes it.
    placeholder = (service_type is ServiceType.STANDALONE
                   and service_status is ServiceStatus.INACTIVE)
    if service_type is not ServiceType.DATA and not body.endpoint.strip() and not placeholder:
        raise InvalidInput("endpoint is required for non-DATA services (an INACTIVE standalone "
                           "service may be created without one and uploaded to)")
    view = registry.create(
        name=body.name,
        service_type=service_type,
        description=body.description,
        endpoint=body.endpoint.strip(),
        status=service_status,
        capabilities=body.capabilities,
        pricing=body.model_dump(include={"pricing_amount", "pricing_type", "pricing_interval",
                                         "pricing_unit"}),
        policy=body.policy(),
    )
    return ServiceSaved(service=ServicePublic.of(view, policy),
                        message="Service added successfully")


@router.get("/{id}")
def get_service(service_id: ServiceId, registry: Services, policy: Policy) -> ServiceOne:
    return ServiceOne(service=ServicePublic.of(registry.get(service_id), policy))


@router.put("/{id}")
def update_service(service_id: ServiceId, body: ServiceUpdate, registry: Services,
                   policy: Policy) -> ServiceSaved:
    changes = body.model_dump(exclude_none=True, exclude=set(POLICY_FIELDS))
    view = registry.update(service_id, {**changes, **body.policy()})
    return ServiceSaved(service=ServicePublic.of(view, policy),
                        message="Service updated successfully")


@router.delete("/{id}")
def delete_service(service_id: ServiceId, registry: Services) -> Message:
    registry.delete(service_id)
    return Message(message="Service deleted successfully")


@router.put("/{id}/pricing")
def update_pricing(service_id: ServiceId, body: ServicePricing, registry: Services) -> Message:
    registry.update(service_id, parse_pricing(body.pricing_amount, body.pricing_type,
                                              body.pricing_interval, body.pricing_unit))
    return Message(message="Service pricing updated successfully")


@router.put("/{id}/status")
def update_status(service_id: ServiceId, body: StatusUpdate, registry: Services) -> StatusChanged:
    new_status = registry.set_status(service_id, body.status)
    return StatusChanged(message="Service status updated successfully", status=str(new_status))


@router.get("/{id}/passphrase")
def passphrase(service_id: ServiceId, registry: Services) -> Passphrase:
    details = registry.passphrase(service_id)
    return Passphrase(passphrase=details.passphrase,
                      data_details=DataDetailsPublic.model_validate(details))


@router.get("/{id}/interfaces")
def interfaces(service_id: ServiceId, registry: Services) -> InterfaceList:
    items = [InterfacePublic.model_validate(i) for i in registry.interfaces(service_id)]
    return InterfaceList(interfaces=items, total=len(items))

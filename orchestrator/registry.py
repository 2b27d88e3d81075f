"""The service registry: services, their interfaces and type-specific details, in the database.

Service-type specific creation (pulling, building, uploading) lives in ``orchestrator.offerings``;
this module only stores and reads, and announces every change on the event bus.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, func, select

from orchestrator.db import Database
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.events import SERVICE_UPDATED, EventBus
from orchestrator.models import (
    DataDetails,
    DockerDetails,
    Service,
    ServiceInterface,
    StandaloneDetails,
    utcnow,
)
from orchestrator.service_policy import parse_policy
from orchestrator.states import ServiceStatus, ServiceType
from orchestrator.wiring import Interface

# The generic endpoint's `type` values and the service types they stand for.
GENERIC_TYPES: dict[str, ServiceType] = {
    "storage": ServiceType.DATA,
    "data": ServiceType.DATA,
    "docker": ServiceType.DOCKER,
    "standalone": ServiceType.STANDALONE,
    "relay": ServiceType.RELAY,
}
TYPE_NAMES: dict[ServiceType, str] = {
    ServiceType.DATA: "storage",
    ServiceType.DOCKER: "docker",
    ServiceType.STANDALONE: "standalone",
    ServiceType.RELAY: "relay",
}
STATUS_ALIASES = {
    "ACTIVE": ServiceStatus.ACTIVE,
    "AVAILABLE": ServiceStatus.ACTIVE,
    "INACTIVE": ServiceStatus.INACTIVE,
    "UNAVAILABLE": ServiceStatus.INACTIVE,
}
# Services whose views snapshot() keeps at most (the cache starts over beyond that).
SNAPSHOT_CACHE_SIZE = 1024


def parse_status(value: str, *, aliases: bool = True) -> ServiceStatus:
    key = (value or "").strip().upper()
    allowed = STATUS_ALIASES if aliases else {k: v for k, v in STATUS_ALIASES.items()
                                              if k in ServiceStatus.__members__}
    if key not in allowed:
        raise InvalidInput(f"Invalid status value '{value}': use ACTIVE or INACTIVE")
    return allowed[key]


PRICING_TYPES = ("FREE", "ONE_TIME", "RECURRING")


def parse_pricing(amount: float, pricing_type: str, interval: str,
                  unit: str) -> dict[str, Any]:
    """A service's pricing columns as a client sets them (``PUT /api/services/{id}/pricing``);
    InvalidInput naming the field."""
    if not math.isfinite(amount) or amount < 0:
        raise InvalidInput("pricing_amount must be a non-negative number")
    kind = (pricing_type or "").strip().upper()
    if kind not in PRICING_TYPES:
        raise InvalidInput(f"Invalid pricing_type '{pricing_type}': use ONE_TIME, RECURRING or "
                           "FREE")
    return {"pricing_amount": float(amount), "pricing_type": kind,
            "pricing_interval": interval.strip(), "pricing_unit": unit.strip().upper()}


def parse_interfaces(raw: Iterable[dict[str, Any]] | None) -> list[Interface]:
    if raw is None:
        return []
    specs = []
    for item in raw:
        if not isinstance(item, dict):
            raise InvalidInput("Each interface must be an object")
        specs.append(Interface.parse(item))
    return specs


@dataclass
class ServiceView:
    """A service with everything that hangs off it, read in one go."""

    service: Service
    interfaces: list[ServiceInterface] = field(default_factory=list)
    docker: DockerDetails | None = None
    standalone: StandaloneDetails | None = None
    data: DataDetails | None = None


class ServiceRegistry:
    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus
        # Called with the view of a service about to be deleted (image removal, files).
        self._on_delete: list[Callable[[ServiceView], None]] = []
        # counts() is read on every status request and DHT publication; it is cached until the
        # next change (the generation guards against a query that raced with a write).
        self._counts: dict[str, int] | None = None
        self._generation = 0
        self._counts_lock = threading.Lock()
        # snapshot()'s views, kept the same way.
        self._views: dict[int, ServiceView] = {}

    def before_delete(self, hook: Callable[[ServiceView], None]) -> None:
        """Call ``hook(view)`` with each service about to be deleted."""
        self._on_delete.append(hook)

    # -- reading -----------------------------------------------------------------------------
    def list(self) -> list[ServiceView]:
        with self.db.session() as s:
            services = s.exec(select(Service).order_by(col(Service.id))).all()
            return [self._view(s, svc) for svc in services]

    def get(self, service_id: int) -> ServiceView:
        with self.db.session() as s:
            return self._view(s, self._require(s, service_id))

    def exists(self, service_id: int) -> bool:
        with self.db.session() as s:
            return s.get(Service, service_id) is not None

    def snapshot(self, service_id: int) -> ServiceView:
        """The service as ``get`` reads it, from a cache kept until the next change to any
        service: for compiling and dispatching jobs, which read the same few services again and
        again. The view is shared between callers: read it, never change it."""
        view = self._views.get(service_id)
        if view is not None:
            return view
        generation = self._generation
        view = self.get(service_id)
        with self._counts_lock:
            if generation == self._generation:
                if len(self._views) >= SNAPSHOT_CACHE_SIZE:
                    self._views.clear()
                self._views[service_id] = view
        return view

    def interface(self, interface_id: int) -> ServiceInterface | None:
        """One interface row by its id, whichever service it belongs to."""
        with self.db.session() as s:
            return s.get(ServiceInterface, interface_id)

    def interfaces(self, service_id: int) -> list[ServiceInterface]:
        with self.db.session() as s:
            self._require(s, service_id)
            return list(self._interfaces(s, service_id))

    def counts(self) -> dict[str, int]:
        """Active services by kind, as peers see them: files (DATA) and apps (the rest)."""
        cached = self._counts
        if cached is not None:
            return dict(cached)
        generation = self._generation
        with self.db.session() as s:
            rows = s.exec(
                select(Service.service_type, func.count())
                .where(Service.status == ServiceStatus.ACTIVE)
                .group_by(Service.service_type)
            ).all()
        by_type = {t: n for t, n in rows}
        counts = {
            "files_count": by_type.get(ServiceType.DATA, 0),
            "apps_count": by_type.get(ServiceType.DOCKER, 0)
            + by_type.get(ServiceType.STANDALONE, 0),
        }
        with self._counts_lock:
            if generation == self._generation:
                self._counts = counts
        return dict(counts)

    def passphrase(self, service_id: int) -> DataDetails:
        view = self.get(service_id)
        if view.service.service_type != ServiceType.DATA:
            raise InvalidInput("Service is not a DATA service")
        if view.data is None:
            raise NotFound("Data details not found for this service")
        return view.data

    # -- writing -----------------------------------------------------------------------------
    def create(
        self,
        *,
        name: str,
        service_type: ServiceType,
        description: str = "",
        endpoint: str = "",
        status: ServiceStatus = ServiceStatus.ACTIVE,
        capabilities: dict[str, Any] | None = None,
        interfaces: Sequence[Interface] = (),
        details: DockerDetails | StandaloneDetails | DataDetails | None = None,
        pricing: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> ServiceView:
        """Create a service with its interfaces and details in one transaction.

        ``policy``: its access settings as a client gives them (``peer_policy.parse_policy``).
        """
        name = validate_name(name)
        policy_fields = parse_policy(policy or {})
        service = Service(
            name=name,
            description=description,
            service_type=service_type,
            type=TYPE_NAMES[service_type],
            status=status,
            endpoint=endpoint,
            capabilities=capabilities or {},
            **(pricing or {}),
            **policy_fields,
        )
        with self.db.session() as s:
            s.add(service)
            s.flush()
            assert service.id is not None
            for spec in interfaces:
                s.add(ServiceInterface(service_id=service.id, **spec.to_dict()))
            if details is not None:
                details.service_id = service.id
                s.add(details)
            s.commit()
            view = self._view(s, service)
        self._changed("created", view.service)
        return view

    def update(self, service_id: int, changes: dict[str, Any]) -> ServiceView:
        """Change the service's own fields and its policy (all checked before any is set)."""
        allowed = {"name", "description", "endpoint", "capabilities", "pricing_amount",
                   "pricing_type", "pricing_interval", "pricing_unit", "status"}
        policy = parse_policy(changes)
        with self.db.session() as s:
            service = self._require(s, service_id)
            if "name" in changes and changes["name"] is not None:
                validate_name(changes["name"])
            if "status" in changes and changes["status"] is not None:
                parse_status(changes["status"])
            for key, value in policy.items():
                setattr(service, key, value)
            for key, value in changes.items():
                if key not in allowed or value is None:
                    continue
                if key == "name":
                    value = validate_name(value)
                if key == "status":
                    value = parse_status(value)
                setattr(service, key, value)
            service.updated_at = utcnow()
            s.add(service)
            s.commit()
            view = self._view(s, service)
        self._changed("updated", view.service)
        return view

    def set_status(self, service_id: int, status: str) -> ServiceStatus:
        parsed = parse_status(status, aliases=False)
        self.update(service_id, {"status": parsed})
        return parsed

    def replace_interfaces(self, service_id: int, specs: Sequence[Interface]) -> None:
        with self.db.session() as s:
            service = self._require(s, service_id)
            for iface in self._interfaces(s, service_id):
                s.delete(iface)
            for spec in specs:
                s.add(ServiceInterface(service_id=service_id, **spec.to_dict()))
            service.updated_at = utcnow()
            s.add(service)
            s.commit()
        self._changed("interfaces_updated", service)

    def add_details(self, service_id: int, details: DockerDetails | StandaloneDetails
                    | DataDetails) -> ServiceView:
        """Give a service made without its type-specific details row (a placeholder that an
        upload fills in later) that row (InvalidInput when it has one already)."""
        with self.db.session() as s:
            view = self._view(s, self._require(s, service_id))
            if view.docker or view.standalone or view.data:
                raise InvalidInput("The service has its details already")
            details.service_id = service_id
            self._save_details(s, view, details)
        return self.get(service_id)

    def update_details(self, service_id: int, **changes: Any) -> ServiceView:
        """Change fields of the service's type-specific details row."""
        with self.db.session() as s:
            view = self._view(s, self._require(s, service_id))
            details = view.docker or view.standalone or view.data
            if details is None:
                raise NotFound("Service details not found")
            for key, value in changes.items():
                setattr(details, key, value)
            self._save_details(s, view, details)
        return self.get(service_id)

    def _save_details(self, s: Session, view: ServiceView, details: Any) -> None:
        view.service.updated_at = utcnow()
        s.add(details)
        s.add(view.service)
        s.commit()
        self._changed("updated", view.service)

    def delete(self, service_id: int) -> ServiceView:
        view = self.get(service_id)
        for hook in self._on_delete:
            hook(view)
        with self.db.session() as s:
            service = self._require(s, service_id)
            s.delete(service)
            s.commit()
        self._changed("deleted", view.service)
        return view

    # -- helpers -----------------------------------------------------------------------------
    def _changed(self, action: str, service: Service) -> None:
        with self._counts_lock:
            self._generation += 1
            self._counts = None
            self._views = {}
        self.bus.publish(SERVICE_UPDATED, {"action": action, "service_id": service.id,
                                           "service_type": service.service_type})

    @staticmethod
    def _require(s: Session, service_id: int) -> Service:
        service = s.get(Service, service_id)
        if service is None:
            raise NotFound("Service not found")
        return service

    @staticmethod
    def _interfaces(s: Session, service_id: int) -> Sequence[ServiceInterface]:
        return s.exec(
            select(ServiceInterface)
            .where(ServiceInterface.service_id == service_id)
            .order_by(col(ServiceInterface.id))
        ).all()

    def _view(self, s: Session, service: Service) -> ServiceView:
        assert service.id is not None
        view = ServiceView(service, list(self._interfaces(s, service.id)))
        if service.service_type == ServiceType.DOCKER:
            view.docker = s.exec(select(DockerDetails).where(
                DockerDetails.service_id == service.id)).first()
        elif service.service_type == ServiceType.STANDALONE:
            view.standalone = s.exec(select(StandaloneDetails).where(
                StandaloneDetails.service_id == service.id)).first()
        elif service.service_type == ServiceType.DATA:
            view.data = s.exec(select(DataDetails).where(
                DataDetails.service_id == service.id)).first()
        return view


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("Service name is required")
    name = name.strip()
    if len(name) > 128:
        raise InvalidInput("Service name is longer than 128 characters")
    if any(ord(ch) < 32 for ch in name):
        raise InvalidInput("Service name contains control characters")
    return name


def generic_type(value: str) -> ServiceType:
    key = (value or "").strip().lower()
    if key not in GENERIC_TYPES:
        raise InvalidInput(f"Invalid service type '{value}': use storage, docker, standalone "
                           "or relay")
    return GENERIC_TYPES[key]

"""What another peer may do with this node's services: the one place that decides.

Every peer is a stranger. For a ``job_run`` from another peer, ``PeerPolicy.admit`` answers with
the request as this node will run it (and the limits, isolation and readable paths of the job) or
raises a ``Refused`` with a stable short code:

- the service's access (``public``, ``peers`` + ``allowed_peers``, ``private``) must admit the
  peer (``access_denied``);
- the command is the owner's: a standalone service's executable is never the requester's
  (``entrypoint_not_allowed``), its arguments only where the service has ``allow_args``
  (``command_not_allowed``); a Docker job's entrypoint/cmd/args are the requester's unless the
  service turned ``allow_command`` off;
- inputs are taken by the service's declared input interface ids only: the ENV name, ARG
  position and MOUNT path come from the service (``unknown_interface``); an input without an id
  is STDIN; free ``env`` may set only the service's declared ENV names (``env_not_allowed``);
- the timeout must be finite, positive and within the node's bound (``bad_timeout``).

Jobs of the node's own workflows (``own_terms``) keep the owner's freedom over the command; both
kinds get the limits of the service (its overrides, else the node's defaults). The per-service
settings are validated by ``orchestrator.service_policy.parse_policy`` before anything is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from executors.base import Isolation, JobLimits
from orchestrator.service_policy import LIMIT_KEYS
from orchestrator.states import InterfaceType, ServiceType
from orchestrator.wiring import can_input

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.job_request import JobRequest
    from orchestrator.models import Service
    from orchestrator.registry import ServiceView

INPUT_TYPES = {InterfaceType.STDIN, InterfaceType.ENV, InterfaceType.ARG, InterfaceType.MOUNT}
MB = 1024 * 1024


# -- refusals ------------------------------------------------------------------------------------
class Refused(Exception):
    """A request another peer may not make; ``str()`` is ``"<code>: <one line>"``."""

    code = "refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AccessDenied(Refused):
    code = "access_denied"


class EntrypointNotAllowed(Refused):
    code = "entrypoint_not_allowed"


class CommandNotAllowed(Refused):
    code = "command_not_allowed"


class UnknownInterface(Refused):
    code = "unknown_interface"


class EnvNotAllowed(Refused):
    code = "env_not_allowed"


class BadTimeout(Refused):
    code = "bad_timeout"


class Busy(Refused):
    code = "busy"


# -- node-wide defaults -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """The node-wide defaults (see ``orchestrator.config.Settings``); 0 limits: none."""

    access: str = "public"
    access_peers: tuple[str, ...] = ()
    memory_mb: int = 2048
    cpus: float = 1.0
    pids: int = 512
    output_mb: int = 1024
    timeout_max_seconds: float = 24 * 3600.0
    remote_network: bool = False
    sandbox_user: str = "nobody"
    # Where a service's own files may live (``<data dir>/services``): readable by its jobs.
    services_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyConfig:
        return cls(access=settings.service_access,
                   access_peers=tuple(settings.service_access_peers),
                   memory_mb=settings.job_memory_mb, cpus=settings.job_cpus,
                   pids=settings.job_pids, output_mb=settings.job_output_mb,
                   timeout_max_seconds=settings.job_timeout_max_seconds,
                   remote_network=settings.remote_jobs_network,
                   sandbox_user=settings.sandbox_user, services_dir=settings.services_dir)


@dataclass(frozen=True, slots=True)
class Terms:
    """What a job gets on this node, beside its request."""

    limits: JobLimits = field(default_factory=JobLimits)
    isolation: Isolation = field(default_factory=Isolation)
    readable_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Admitted:
    request: JobRequest
    terms: Terms


# -- the decisions ---------------------------------------------------------------------------
def _label(service: Service) -> str:
    return f"service '{service.name}' ({service.id})"


class PeerPolicy:
    def __init__(self, config: PolicyConfig | None = None) -> None:
        self.config = config or PolicyConfig()

    # -- effective settings of a service -----------------------------------------------------
    def access(self, service: Service) -> str:
        if service.access:
            return service.access
        return "private" if service.service_type == ServiceType.DATA else self.config.access

    def allowed_peers(self, service: Service) -> tuple[str, ...]:
        if service.access:
            return tuple(service.allowed_peers or ())
        if service.service_type == ServiceType.DATA:
            return ()
        return self.config.access_peers

    def network(self, service: Service) -> bool:
        if service.allow_network is None:
            return self.config.remote_network
        return bool(service.allow_network)

    def limits(self, service: Service) -> dict[str, int | float]:
        """The service's limits, its overrides over the node's defaults (0: none)."""
        own = service.limits or {}
        cfg = self.config
        base: dict[str, int | float] = {
            "memory_mb": cfg.memory_mb, "cpus": cfg.cpus, "pids": cfg.pids,
            "output_mb": cfg.output_mb, "timeout_max_seconds": cfg.timeout_max_seconds}
        for key in LIMIT_KEYS:
            if own.get(key) is not None:
                base[key] = own[key]
        # A service may lower the node's bound on run time, never raise it.
        base["timeout_max_seconds"] = min(float(base["timeout_max_seconds"]),
                                          cfg.timeout_max_seconds)
        return base

    def job_limits(self, service: Service) -> JobLimits:
        lim = self.limits(service)
        return JobLimits(memory_bytes=int(lim["memory_mb"]) * MB or None,
                         cpus=float(lim["cpus"]) or None, pids=int(lim["pids"]) or None,
                         output_bytes=int(lim["output_mb"]) * MB or None)

    def may_use(self, service: Service, peer_id: str) -> bool:
        """Whether ``peer_id`` (another peer, not blacklisted) may use ``service``."""
        access = self.access(service)
        if access == "public":
            return True
        if access == "peers":
            return peer_id.lower() in self.allowed_peers(service)
        return False

    def check_timeout(self, service: Service, timeout: Any) -> float:
        bound = float(self.limits(service)["timeout_max_seconds"])
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                or not math.isfinite(timeout) or timeout <= 0:
            raise BadTimeout(f"timeout must be a finite, positive number of seconds "
                             f"(at most {bound:g})")
        if timeout > bound:
            raise BadTimeout(f"timeout {timeout:g}s is over the bound of {_label(service)}: "
                             f"{bound:g}s")
        return float(timeout)

    def _readable(self, view: ServiceView) -> tuple[str, ...]:
        s, root = view.standalone, self.config.services_dir
        if s is None or not s.install_dir or root is None:
            return ()
        path = Path(s.install_dir).resolve()
        return (str(path),) if path.is_relative_to(root.resolve()) and path != root.resolve() \
            else ()

    def own_terms(self, view: ServiceView, request: JobRequest) -> Terms:
        """A job of this node's own workflow: the owner's command, the service's limits."""
        self.check_timeout(view.service, request.timeout)
        return Terms(self.job_limits(view.service),
                     Isolation(network=True, stranger=False,
                               unprivileged_user=self.config.sandbox_user),
                     self._readable(view))

    def admit(self, view: ServiceView, peer_id: str, request: JobRequest) -> Admitted:
        """A job another peer (``peer_id``) asks for: as this node will run it, or Refused."""
        svc = view.service
        if not self.may_use(svc, peer_id):
            raise AccessDenied(f"peer {peer_id} may not use {_label(svc)} "
                               f"(access: {self.access(svc)})")
        self.check_timeout(svc, request.timeout)
        kind = ServiceType(svc.service_type)
        if kind is ServiceType.STANDALONE:
            if request.entrypoint is not None:
                raise EntrypointNotAllowed(f"the executable of {_label(svc)} is the owner's; "
                                           "a request may not set an entrypoint")
            if (request.cmd is not None or request.args) and not svc.allow_args:
                raise CommandNotAllowed(f"{_label(svc)} takes no arguments from other peers")
        elif kind is ServiceType.DOCKER and not svc.allow_command and (
                request.entrypoint is not None or request.cmd is not None or request.args):
            raise CommandNotAllowed(f"{_label(svc)} runs its own command; a request may not "
                                    "set entrypoint, cmd or args")
        inputs = tuple(self._input(view, inp) for inp in request.inputs)
        declared_env = {i.path for i in view.interfaces
                        if i.interface_type == InterfaceType.ENV}
        for name in request.env:
            if name not in declared_env:
                raise EnvNotAllowed(f"{_label(svc)} declares no ENV interface "
                                    f"'{name[:64]}'; a request may set only declared names")
        terms = Terms(self.job_limits(svc),
                      Isolation(network=self.network(svc), stranger=True,
                                unprivileged_user=self.config.sandbox_user),
                      self._readable(view))
        return Admitted(replace(request, inputs=inputs), terms)

    @staticmethod
    def _input(view: ServiceView, inp: Any) -> Any:
        """One input, addressed by the service's interface (its type and path, not the
        requester's)."""
        label = _label(view.service)
        if inp.interface_id is None:
            if inp.interface_type in (None, InterfaceType.STDIN) and not inp.path:
                return replace(inp, interface_type=str(InterfaceType.STDIN), path="")
            # Named by type alone: the service's one input of that type.
            of_type = [i for i in view.interfaces if i.interface_type == inp.interface_type
                       and can_input(i.interface_type, i.mount_function or "")]
            if inp.interface_type not in INPUT_TYPES or inp.path or len(of_type) != 1:
                raise UnknownInterface(f"an input of {label} must name one of its input "
                                       "interfaces by id (by type alone: only STDIN, or a type "
                                       "of which it has exactly one input)")
            iface = of_type[0]
            return replace(inp, interface_id=iface.id, interface_type=str(iface.interface_type),
                           path=iface.path)
        iface = next((i for i in view.interfaces if i.id == inp.interface_id), None)
        if iface is None or iface.interface_type not in INPUT_TYPES or (
                iface.interface_type == InterfaceType.MOUNT
                and iface.mount_function not in ("", "INPUT", "BOTH")):
            raise UnknownInterface(f"interface {inp.interface_id} is not an input of {label}")
        if (inp.interface_type not in (None, iface.interface_type)
                or (inp.path and inp.path != iface.path)):
            raise UnknownInterface(f"interface {inp.interface_id} of {label} is "
                                   f"{iface.interface_type} {iface.path!r}; an input may not "
                                   "name another type or path")
        return replace(inp, interface_type=str(iface.interface_type), path=iface.path)


# -- jobs at once ----------------------------------------------------------------------------
class JobGate:
    """How many jobs of other peers run at once: ``total`` in all, ``per_peer`` for one peer;
    past that a job waits in a FIFO queue of ``queue`` places (a peer holding at most
    ``per_peer`` of them), and past the queue it is refused ``busy``.

    Pure bookkeeping (no clock, no I/O): ``enter`` says whether a ticket runs now or waits,
    ``leave`` frees its place and answers the waiting tickets that run now, in queue order.
    """

    def __init__(self, *, total: int, per_peer: int, queue: int) -> None:
        if total < 1 or per_peer < 1 or queue < 0:
            raise ValueError("total and per_peer must be at least 1, queue at least 0")
        self.total, self.per_peer, self.queue = total, per_peer, queue
        self._running: dict[object, str] = {}
        self._waiting: dict[object, str] = {}  # insertion order: the queue

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def _count(self, table: dict[object, str], peer_id: str) -> int:
        return sum(1 for p in table.values() if p == peer_id)

    def _may_run(self, peer_id: str) -> bool:
        return (len(self._running) < self.total
                and self._count(self._running, peer_id) < self.per_peer)

    def enter(self, ticket: object, peer_id: str) -> bool:
        """True: ``ticket`` runs now; False: it waits (``leave`` will say when it runs).
        Raises Busy when neither is possible."""
        if ticket in self._running or ticket in self._waiting:
            raise ValueError("ticket already entered")
        if self._may_run(peer_id) and not any(p == peer_id for p in self._waiting.values()):
            self._running[ticket] = peer_id
            return True
        if len(self._waiting) >= self.queue \
                or self._count(self._waiting, peer_id) >= self.per_peer:
            raise Busy(f"this node runs {len(self._running)} jobs of other peers "
                       f"({self._count(self._running, peer_id)} of peer {peer_id}) and its "
                       "queue is full; try again later")
        self._waiting[ticket] = peer_id
        return False

    def leave(self, ticket: object) -> list[object]:
        """``ticket`` has ended (or, waiting, gave up): the waiting tickets that run now."""
        self._running.pop(ticket, None)
        self._waiting.pop(ticket, None)
        started = []
        for waiting, peer_id in list(self._waiting.items()):
            if self._may_run(peer_id):
                del self._waiting[waiting]
                self._running[waiting] = peer_id
                started.append(waiting)
        return started

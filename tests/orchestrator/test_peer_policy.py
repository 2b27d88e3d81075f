"""The executing side's policy: what another peer may ask of a service, decided in one place."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from flows.job_protocol import WireError, request_from_wire
from orchestrator.errors import InvalidInput
from orchestrator.job_request import JobInput, JobRequest
from orchestrator.models import Service, ServiceInterface, StandaloneDetails
from orchestrator.peer_policy import (
    AccessDenied,
    BadTimeout,
    Busy,
    CommandNotAllowed,
    EntrypointNotAllowed,
    EnvNotAllowed,
    JobGate,
    PeerPolicy,
    PolicyConfig,
    UnknownInterface,
)
from orchestrator.registry import ServiceView
from orchestrator.service_policy import parse_policy

STRANGER = "a" * 40
FRIEND = "b" * 40


def view(kind: str = "STANDALONE", *, install_dir: str = "", **fields: object) -> ServiceView:
    svc = Service(id=7, name="tool", service_type=kind, type=kind.lower(), **fields)
    ifaces = [
        ServiceInterface(id=1, service_id=7, interface_type="STDIN"),
        ServiceInterface(id=2, service_id=7, interface_type="ENV", path="NAME"),
        ServiceInterface(id=3, service_id=7, interface_type="MOUNT", path="/in",
                         mount_function="INPUT"),
        ServiceInterface(id=4, service_id=7, interface_type="MOUNT", path="/out",
                         mount_function="OUTPUT"),
        ServiceInterface(id=5, service_id=7, interface_type="STDOUT"),
    ]
    details = StandaloneDetails(service_id=7, executable_path="/bin/cat", install_dir=install_dir)
    return ServiceView(svc, ifaces, standalone=details if kind == "STANDALONE" else None)


def req(**fields: object) -> JobRequest:
    return JobRequest(job_id="j", service_id=7, peer_id="me", **fields)  # type: ignore[arg-type]


POLICY = PeerPolicy(PolicyConfig(timeout_max_seconds=3600.0))


def test_a_standalone_entrypoint_is_refused() -> None:
    with pytest.raises(EntrypointNotAllowed, match=r"executable .* is the owner's"):
        POLICY.admit(view(), STRANGER, req(entrypoint=("/bin/sh", "-c", "touch x")))


def test_standalone_arguments_only_where_allowed() -> None:
    with pytest.raises(CommandNotAllowed):
        POLICY.admit(view(), STRANGER, req(cmd=("-n",)))
    with pytest.raises(CommandNotAllowed):
        POLICY.admit(view(), STRANGER, req(args=("-n",)))
    admitted = POLICY.admit(view(allow_args=True), STRANGER, req(cmd=("-n",)))
    assert admitted.request.cmd == ("-n",)


def test_docker_command_is_the_requesters_unless_turned_off() -> None:
    assert POLICY.admit(view("DOCKER"), STRANGER, req(entrypoint=("sh",))).request.entrypoint
    with pytest.raises(CommandNotAllowed):
        POLICY.admit(view("DOCKER", allow_command=False), STRANGER, req(cmd=("sh",)))


def test_inputs_take_the_services_type_and_path() -> None:
    admitted = POLICY.admit(view(), STRANGER, req(inputs=(
        JobInput(2, None, text="v"), JobInput(3, "MOUNT", "/in", text="x"),
        JobInput(None, "STDIN", text="s"))))
    got = [(i.interface_type, i.path) for i in admitted.request.inputs]
    assert got == [("ENV", "NAME"), ("MOUNT", "/in"), ("STDIN", "")]


@pytest.mark.parametrize("inp", [
    JobInput(None, "ENV", "LD_PRELOAD", text="/tmp/evil.so"),
    JobInput(None, "MOUNT", "/etc", text="x"),
    JobInput(2, "ENV", "LD_PRELOAD", text="x"),      # a declared id, another name
    JobInput(2, "MOUNT", "", text="x"),               # a declared id, another type
    JobInput(4, None, text="x"),                      # an output interface
    JobInput(5, None, text="x"),
    JobInput(99, None, text="x"),
    JobInput(None, None, "/etc/passwd", text="x"),
])
def test_inputs_outside_the_declared_interfaces_are_refused(inp: JobInput) -> None:
    with pytest.raises(UnknownInterface):
        POLICY.admit(view(), STRANGER, req(inputs=(inp,)))


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "OTHER"])
def test_free_env_sets_only_declared_names(name: str) -> None:
    with pytest.raises(EnvNotAllowed, match="declares no ENV interface"):
        POLICY.admit(view(), STRANGER, req(env={name: "x"}))
    assert POLICY.admit(view(), STRANGER, req(env={"NAME": "x"})).request.env == {"NAME": "x"}


def test_access_settings() -> None:
    assert POLICY.may_use(view().service, STRANGER)
    private = view(access="private")
    assert not POLICY.may_use(private.service, STRANGER)
    with pytest.raises(AccessDenied, match="access: private"):
        POLICY.admit(private, STRANGER, req())
    peers = view(access="peers", allowed_peers=[FRIEND])
    assert POLICY.may_use(peers.service, FRIEND)
    assert not POLICY.may_use(peers.service, STRANGER)
    # DATA: private unless its owner says otherwise; the node default applies to the rest.
    assert not POLICY.may_use(view("DATA").service, STRANGER)
    assert POLICY.may_use(view("DATA", access="public").service, STRANGER)
    closed = PeerPolicy(PolicyConfig(access="peers", access_peers=(FRIEND,)))
    assert closed.may_use(view().service, FRIEND)
    assert not closed.may_use(view().service, STRANGER)
    assert closed.access(view().service) == "peers"


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -math.inf, 1e308, -1.0, 0, 3601])
def test_bad_timeouts_are_refused(timeout: float) -> None:
    with pytest.raises(BadTimeout):
        POLICY.admit(view(), STRANGER, req(timeout=timeout))


def test_a_service_may_lower_the_timeout_bound_only() -> None:
    low = view(limits={"timeout_max_seconds": 10})
    with pytest.raises(BadTimeout, match="over the bound"):
        POLICY.admit(low, STRANGER, req(timeout=11))
    high = view(limits={"timeout_max_seconds": 10**6})
    with pytest.raises(BadTimeout):
        POLICY.admit(high, STRANGER, req(timeout=7200))


def test_limits_isolation_and_readable_paths(tmp_path: Path) -> None:
    services = tmp_path / "services"
    (services / "9").mkdir(parents=True)
    policy = PeerPolicy(PolicyConfig(memory_mb=100, cpus=0.5, pids=0, output_mb=2,
                                     remote_network=False, sandbox_user="sandbox",
                                     services_dir=services))
    v = view(install_dir=str(services / "9"), limits={"memory_mb": 50})
    terms = policy.admit(v, STRANGER, req()).terms
    assert terms.limits.memory_bytes == 50 * 1024 * 1024
    assert terms.limits.cpus == 0.5 and terms.limits.pids is None
    assert terms.limits.output_bytes == 2 * 1024 * 1024
    assert (terms.isolation.stranger, terms.isolation.network) == (True, False)
    assert terms.isolation.unprivileged_user == "sandbox"
    assert terms.readable_paths == (str((services / "9").resolve()),)
    assert policy.admit(view(allow_network=True), STRANGER, req()).terms.isolation.network
    own = policy.own_terms(v, req(entrypoint=("/bin/sh",)))
    assert (own.isolation.stranger, own.isolation.network) == (False, True)
    # A service whose files are elsewhere gives no readable path.
    assert policy.admit(view(install_dir="/opt/x"), STRANGER, req()).terms.readable_paths == ()


@pytest.mark.parametrize("raw", [
    {"access": "everyone"}, {"allowed_peers": ["nothex"]}, {"allowed_peers": "a" * 40},
    {"allow_command": "yes"}, {"allow_network": 1}, {"limits": {"memory_mb": -1}},
    {"limits": {"cpus": math.inf}}, {"limits": {"pids": 1.5}}, {"limits": {"disk": 1}},
    {"limits": {"timeout_max_seconds": 0}}, {"limits": []},
])
def test_bad_policy_values_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        parse_policy(raw)


def test_policy_values_parse() -> None:
    out = parse_policy({"access": "PEERS", "allowed_peers": [FRIEND.upper(), FRIEND],
                        "allow_network": "default", "limits": {"memory_mb": 5, "cpus": None}})
    assert out == {"access": "peers", "allowed_peers": [FRIEND], "allow_network": None,
                   "limits": {"memory_mb": 5}}
    assert parse_policy({"access": "default"}) == {"access": None}


# -- the wire ---------------------------------------------------------------------------------
@pytest.mark.parametrize("timeout", [math.nan, math.inf, 10**400, -1, 0, True, "5"])
def test_the_wire_refuses_non_finite_timeouts(timeout: object) -> None:
    with pytest.raises(BadTimeout):
        request_from_wire({"job_id": "j", "service_id": 1, "timeout": timeout}, peer_id="p")


@pytest.mark.parametrize("raw", [
    {"inputs": [{"interface_type": "STDIN", "text": "x"}] * 65},
    {"env": {f"K{i}": "v" for i in range(65)}},
    {"env": {"K": "v" * (64 * 1024 + 1)}},
    {"args": ["a"] * 257},
    {"args": ["a" * 60000] * 20},
    {"job_id": "j" * 201},
    {"job_id": "a\nb"},
    {"inputs": [{"interface_id": True}]},
    {"inputs": [{"path": "p" * 300}]},
])
def test_the_wire_bounds_a_request(raw: dict[str, object]) -> None:
    with pytest.raises(WireError):
        request_from_wire({"job_id": "j", "service_id": 1, **raw}, peer_id="p")


# -- jobs at once ---------------------------------------------------------------------------
def test_gate_caps_per_peer_and_in_total_then_queues_then_refuses() -> None:
    gate = JobGate(total=2, per_peer=1, queue=2)
    a1, a2, a3, b1, c1, d1 = (object() for _ in range(6))
    assert gate.enter(a1, "a") is True
    assert gate.enter(b1, "b") is True
    assert gate.enter(a2, "a") is False          # a's one place is taken: it waits
    with pytest.raises(Busy, match="queue is full"):
        gate.enter(a3, "a")                      # a holds its share of the queue
    assert gate.enter(c1, "c") is False          # the total is reached: c waits
    with pytest.raises(Busy):
        gate.enter(d1, "d")                      # and the queue is full
    assert gate.leave(a1) == [a2]                # a's next runs first, in queue order
    assert gate.leave(b1) == [c1]
    assert (gate.running, gate.waiting) == (2, 0)


def test_gate_with_no_queue_refuses_at_once_and_a_waiter_may_give_up() -> None:
    gate = JobGate(total=4, per_peer=1, queue=0)
    first = object()
    assert gate.enter(first, "a")
    with pytest.raises(Busy) as err:
        gate.enter(object(), "a")
    assert str(err.value).startswith("busy: ")
    queued = JobGate(total=1, per_peer=1, queue=1)
    t1, t2 = object(), object()
    assert queued.enter(t1, "a") and not queued.enter(t2, "b")
    assert queued.leave(t2) == []                # gave up while waiting
    assert queued.leave(t1) == [] and queued.running == 0

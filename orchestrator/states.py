"""Execution and job states as data: one enum, one transition table, one check."""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED})

TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.RUNNING, RunState.FAILED, RunState.CANCELLED}),
    RunState.RUNNING: frozenset(
        {RunState.RUNNING, RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED}
    ),
    RunState.COMPLETED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.CANCELLED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, current: RunState, target: RunState) -> None:
        super().__init__(f"illegal state change {current} -> {target}")
        self.current, self.target = current, target


def check_transition(current: str, target: str) -> RunState:
    cur, tgt = RunState(current), RunState(target)
    if tgt not in TRANSITIONS[cur]:
        raise IllegalTransition(cur, tgt)
    return tgt


class ServiceType(StrEnum):
    DOCKER = "DOCKER"
    STANDALONE = "STANDALONE"
    DATA = "DATA"
    RELAY = "RELAY"


class ServiceStatus(StrEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


class InterfaceType(StrEnum):
    STDIN = "STDIN"
    STDOUT = "STDOUT"
    STDERR = "STDERR"
    LOGS = "LOGS"
    MOUNT = "MOUNT"
    ENV = "ENV"
    ARG = "ARG"


OUTPUT_INTERFACES = frozenset({InterfaceType.STDOUT, InterfaceType.STDERR, InterfaceType.LOGS,
                               InterfaceType.MOUNT})
INPUT_INTERFACES = frozenset({InterfaceType.STDIN, InterfaceType.MOUNT, InterfaceType.ENV,
                              InterfaceType.ARG})

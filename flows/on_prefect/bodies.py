"""Which execution owner and engine the flow and task runs of this process call back.

A run the node starts (``PrefectEngine.run_flow``) sees the pair it was started with, in a context
variable; a run Prefect starts in a process of its own (a worker running the deployment of
``run_workflow``) gets the pair the process's entry point builds, once, on first use
(``orchestrator.worker``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Protocol

from flows.flow_engine import Attempt, ExecutionBodies


class AttemptSource(Protocol):
    def attempt(self) -> Attempt:
        """The job attempt of the task run being run now."""


Serving = tuple[AttemptSource, ExecutionBodies]

_current: ContextVar[Serving | None] = ContextVar("remote_network_serving", default=None)
_factory: Callable[[], Serving] | None = None
_built: Serving | None = None


def serve(engine: AttemptSource, bodies: ExecutionBodies) -> Token[Serving | None]:
    """Runs started from the current context call ``bodies`` back (until ``reset``)."""
    return _current.set((engine, bodies))


def reset(token: Token[Serving | None]) -> None:
    _current.reset(token)


def serve_process_with(factory: Callable[[], Serving]) -> None:
    """What runs started by Prefect itself in this process use, built on first use."""
    global _factory
    _factory = factory


def current() -> Serving:
    global _built
    serving = _current.get()
    if serving is not None:
        return serving
    if _built is None:
        if _factory is None:
            raise RuntimeError("this process serves no executions: run the flow from a node, "
                               "or from the entry point orchestrator/worker.py:run_workflow")
        _built = _factory()
    return _built

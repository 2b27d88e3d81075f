"""Runs a node: its HTTPS and HTTP servers over one app, until a signal or a restart."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import socket
import ssl
from collections.abc import Iterator

import uvicorn

from api.app import create_app
from api.routes.ws import MAX_MESSAGE_BYTES
from network.certs import ensure_self_signed
from orchestrator import address_file
from orchestrator.config import Settings
from orchestrator.node import Node

log = logging.getLogger("remote_network.serve")


# A connection closed by the shutdown but still open after this long is dropped.
TLS_CLOSE_GRACE_S = 1.0


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the node.

    On shutdown, an idle HTTPS keep-alive connection is closed with a TLS close_notify and then
    waits for the client's answer, which an idle client never sends; uvicorn would then wait out
    its whole graceful-shutdown timeout. Connections that are still closing after
    ``TLS_CLOSE_GRACE_S`` are dropped instead, so a stop or restart is not held up by them.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        reaper = asyncio.create_task(self._drop_closing_connections())
        try:
            await super().shutdown(sockets=sockets)
        finally:
            reaper.cancel()

    async def _drop_closing_connections(self) -> None:
        closing_since: dict[int, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.2)
            now = loop.time()
            for conn in list(self.server_state.connections):
                transport = getattr(conn, "transport", None)
                if transport is None or not transport.is_closing():
                    continue
                first = closing_since.setdefault(id(conn), now)
                if now - first >= TLS_CLOSE_GRACE_S:
                    transport.abort()


class RedactTokens(logging.Filter):
    """Keeps JWTs passed as ``?token=`` (the WebSocket) out of the server's log lines."""

    _TOKEN = re.compile(r"(token=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(self._TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                                for a in (record.args if isinstance(record.args, tuple)
                                          else (record.args,)))
        if isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = self._TOKEN.sub(r"\1[redacted]", record.msg)
        return True


def redact_server_logs() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


class StartupError(Exception):
    pass


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket, inheritable so a restart could hand it on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose protocol
    # is TCP, and without it every small response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


async def run_node(settings: Settings) -> bool:
    """Serve until stopped. Returns True when the node asked to be restarted."""
    node = Node(settings)
    cert, key = ensure_self_signed(settings.tls_dir, common_name=f"rn-{node.peer_id[:16]}")
    sockets = [bind(settings.api_host, settings.api_port),
               bind(settings.http_host, settings.http_port)]
    app = create_app(node)
    common = {"log_level": settings.log_level.lower(), "lifespan": "off",
              "timeout_graceful_shutdown": 5, "access_log": settings.log_level == "DEBUG",
              "ws_max_size": MAX_MESSAGE_BYTES}
    servers = [
        _Server(uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key),
                               ssl_version=ssl.PROTOCOL_TLS_SERVER, **common)),
        _Server(uvicorn.Config(app, **common)),
    ]
    redact_server_logs()  # after the Configs, which set up uvicorn's logging
    await node.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, node.request_stop)
    tasks = [asyncio.create_task(srv.serve(sockets=[sock]))
             for srv, sock in zip(servers, sockets, strict=True)]
    announce(node, settings)
    address_file.write(settings, node.peer_id)
    stopper = asyncio.create_task(node.wait_stopped())
    try:
        await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for srv in servers:
            srv.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        stopper.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        address_file.remove(settings)
        await node.stop()
        for sock in sockets:
            sock.close()
    return node.restart_requested


def announce(node: Node, settings: Settings) -> None:
    reach = address_file.urls(settings)
    if node.prefect.ui_url:
        prefect = f"  Prefect UI:   {node.prefect.ui_url}  (every execution, with its task graph)\n"
    elif node.prefect.external:
        prefect = f"  Prefect API:  {node.prefect.api_url}  (executions are flow runs there)\n"
    else:
        prefect = ""
    print(
        f"Remote Network Node {node.peer_id} is running.\n"
        f"  API (HTTPS):  {reach['api_url']}  (self-signed certificate in {settings.tls_dir})\n"
        f"  API (HTTP):   {reach['http_url']}\n"
        f"  API docs:     {reach['http_url']}/docs\n"
        f"{prefect}"
        f"  Log in:       remote-network token --data-dir {settings.data_dir}   "
        f"(prints a JWT for `Authorization: Bearer ...`)\n"
        f"                or sign GET /api/auth/challenge with the key from "
        f"`remote-network key export --data-dir {settings.data_dir}`",
        flush=True,
    )

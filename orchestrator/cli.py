"""The ``remote-network`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from network.identity import IdentityError

# (flag, settings field, argparse options) for every setting `start` accepts.
START_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--api-host", "api_host", {"help": "HTTPS bind address (default 0.0.0.0)"}),
    ("--api-port", "api_port", {"type": int, "help": "HTTPS port (default 30069)"}),
    ("--http-host", "http_host", {"help": "plain HTTP bind address (default 127.0.0.1)"}),
    ("--http-port", "http_port", {"type": int, "help": "plain HTTP port (default 8081)"}),
    ("--p2p-host", "p2p_host", {"help": "QUIC and DHT bind address"}),
    ("--quic-port", "quic_port", {"type": int, "help": "QUIC port (default 30070)"}),
    ("--dht-port", "dht_port", {"type": int, "help": "DHT port (default 30071)"}),
    ("--database-url", "database_url", {"help": "SQLAlchemy URL (default SQLite in data dir)"}),
    ("--log-level", "log_level", {"choices": ["DEBUG", "INFO", "WARNING", "ERROR"]}),
    ("--key-passphrase-file", "key_passphrase_file",
     {"type": Path, "help": "file holding the identity key passphrase"}),
    ("--docker-host", "docker_host", {"help": "Docker engine URL (default from environment)"}),
    ("--job-timeout", "job_timeout_seconds", {"type": int, "help": "default job timeout, s"}),
    ("--retry-count", "retry_count", {"type": int, "help": "default retries per job"}),
    ("--bootstrap", "bootstrap", {"action": "append", "metavar": "HOST:PORT",
                                  "help": "DHT bootstrap peer (repeatable)"}),
    ("--topic", "topic", {"help": "peer topic (default remote-network-mesh)"}),
    ("--public-host", "public_host",
     {"help": "address peers should use to reach this node (default: detected)"}),
    ("--prefect-port", "prefect_port", {"type": int, "help": "Prefect UI port (default 4200)"}),
]
START_SWITCHES: list[tuple[str, str, str]] = [
    ("--relay", "relay", "act as a relay for peers behind NAT"),
    ("--nat", "nat", "this node is behind NAT and uses relays"),
    ("--prefect-ui", "prefect_ui", "start a Prefect server with its UI beside the node"),
]


# Settings without a hand-written flag above still get one, named after the field; the
# passphrase itself is the exception (a command line is visible to every user: use the file
# or RN_KEY_PASSPHRASE).
NO_FLAG = {"data_dir", "key_passphrase"}
SETTING_HELP = {
    "jwt_ttl_seconds": "lifetime of an API token, s (default 86400)",
    "challenge_ttl_seconds": "lifetime of a login challenge, s (default 300)",
    "upload_ttl_seconds": "an idle WebSocket upload is dropped after this, s (default 600)",
    "upload_max_bytes": "largest file an upload may carry (default 2 GiB)",
    "build_timeout_seconds": "longest a standalone build_command may run, s (default 600)",
    "dht_rpc_timeout": "how long to wait for a DHT peer's answer, s (default 2)",
    "dht_refresh_seconds": "interval between DHT publications and lookups, s (default 30)",
    "peer_stale_seconds": "a peer not seen for this long is dropped, s (default 120)",
    "prefect_api_url": "use this Prefect server instead of starting one (or PREFECT_API_URL)",
    "prefect_database_url": "database of the node's Prefect server (default: embedded "
                            "PostgreSQL in the data dir)",
    "prefect_warmup": "start Prefect when the node starts (default on)",
    "prefect_event_history": "keep Prefect's event history and run its automations",
    "schedule_poll_seconds": "how often due scheduled runs are looked for, s (default 2)",
    "service_access": "who may use a Docker or standalone service that sets no access of its "
                      "own: public, peers or private (default public; DATA: always private)",
    "service_access_peers": "a peer id admitted by --service-access peers",
    "job_memory_mb": "memory of one job, MiB, unless its service sets its own (0: no limit)",
    "job_cpus": "CPU cores' worth of one job (0: no limit)",
    "job_pids": "processes of one job (0: no limit)",
    "job_output_mb": "size of each output of one job, MiB (0: no limit)",
    "job_timeout_max_seconds": "longest run time a job may ask for, s (default 86400)",
    "remote_jobs_max": "jobs of other peers running at once (default 0: two per core)",
    "remote_jobs_per_peer": "jobs of one other peer running at once (default 0: half the total)",
    "remote_jobs_queue": "jobs of other peers waiting for a place; past it they are refused busy "
                         "(default 32)",
    "remote_jobs_network": "give jobs of other peers network access unless their service says "
                           "otherwise (default off)",
    "sandbox_user": "user a standalone job of another peer runs as when the node runs as root",
    "output_inline_limit": "text outputs up to this size are returned inline (default 64 KiB)",
    "retention_days": "executions that ended longer ago are deleted, with the outputs only they "
                      "held; 0 keeps them (default 30)",
    "retention_sweep_seconds": "how often old executions and unused outputs are swept, s "
                               "(default 3600)",
    "web_ui_dir": "serve the built web UI in this folder (with an index.html) at /",
}
# More names for a generated flag (argparse keeps the value under the first one).
FLAG_ALIASES = {"web_ui_dir": ["--web-ui"]}


def generated_flags() -> list[tuple[str, str, dict[str, Any]]]:
    from orchestrator.config import Settings

    covered = {f for _, f, _ in START_FLAGS} | {f for _, f, _ in START_SWITCHES} | NO_FLAG
    flags: list[tuple[str, str, dict[str, Any]]] = []
    for name, info in Settings.model_fields.items():
        if name in covered:
            continue
        kind = info.annotation
        options: dict[str, Any] = {"help": SETTING_HELP.get(name, name.replace("_", " "))}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float):
            options["type"] = kind
        elif kind in (Path, Path | None):
            options["type"] = Path
        elif kind == list[str]:
            options.update(action="append", metavar="VALUE",
                           help=options["help"] + " (repeatable)")
        flags.append((f"--{name.replace('_', '-')}", name, options))
    return flags


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="node data directory "
                        "(default $XDG_DATA_HOME/remote-network)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remote-network",
                                     description="Run and manage a Remote Network Node.")
    sub = parser.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="start the node")
    _add_data_dir(start)
    for flag, field, options in START_FLAGS + generated_flags():
        start.add_argument(flag, *FLAG_ALIASES.get(field, []), default=None, **options)
    for flag, _field, text in START_SWITCHES:
        start.add_argument(flag, action="store_true", default=None, help=text)
    start.set_defaults(func=cmd_start)

    key = sub.add_parser("key", help="the node's identity key")
    key_sub = key.add_subparsers(dest="key_command", required=True)
    show = key_sub.add_parser("show", help="print peer id and public key")
    export = key_sub.add_parser("export", help="print the private key seed (hex)")
    for p, func in ((show, cmd_key_show), (export, cmd_key_export)):
        _add_data_dir(p)
        p.add_argument("--key-passphrase-file", type=Path, default=None)
        p.set_defaults(func=func)

    token = sub.add_parser("token", help="print a fresh JWT for this node's API")
    _add_data_dir(token)
    token.add_argument("--key-passphrase-file", type=Path, default=None)
    token.set_defaults(func=cmd_token)

    check = sub.add_parser("verify", help="check a job receipt, or an execution's chain of "
                                          "receipts, offline")
    check.add_argument("file", type=Path, help="a receipt (DSSE envelope), a list of them, or "
                                               "the answer of GET .../receipts")
    check.add_argument("--key", action="append", default=[], metavar="HEX",
                       help="accept only receipts signed by these public keys (repeatable); "
                            "without it, each receipt is checked with the key it names")
    check.set_defaults(func=cmd_verify)

    from flows.client.cli_workflow import add_parser as add_workflow_parser

    add_workflow_parser(sub)
    return parser


def settings_from(args: argparse.Namespace) -> Any:
    from orchestrator.config import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None) is not None:
        overrides["data_dir"] = args.data_dir
    for flag, field, _ in START_FLAGS + generated_flags():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is not None:
            overrides[field] = value
    for flag, field, _ in START_SWITCHES:
        if getattr(args, flag.lstrip("-").replace("-", "_"), None):
            overrides[field] = True
    return Settings(**overrides)


def cmd_start(args: argparse.Namespace) -> int:
    from orchestrator.serve import StartupError, run_node

    settings = settings_from(args)
    configure_logging(settings.log_level)
    try:
        restart = asyncio.run(run_node(settings))
    except StartupError as exc:
        print(f"remote-network: {exc}", file=sys.stderr)
        return 1
    if restart:
        logging.getLogger("remote_network").info("restarting with the same flags")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "orchestrator.cli", *sys.argv[1:]])
    return 0


def _identity(args: argparse.Namespace) -> Any:
    from orchestrator.keys import load_identity

    settings = settings_from(args)
    # WARNING: the user hears when the key is (or is being) stored unencrypted.
    configure_logging("WARNING")
    return settings, load_identity(settings)


def cmd_key_show(args: argparse.Namespace) -> int:
    _settings, identity = _identity(args)
    print(f"peer_id:    {identity.peer_id}")
    print(f"public_key: {identity.public_key_hex}")
    return 0


def cmd_key_export(args: argparse.Namespace) -> int:
    _settings, identity = _identity(args)
    print(identity.seed.hex())
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from orchestrator.auth import Authenticator, load_or_create_secret

    settings, identity = _identity(args)
    auth = Authenticator(identity, load_or_create_secret(settings.jwt_secret_path),
                         token_ttl=settings.jwt_ttl_seconds)
    print(auth.issue_token())
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 when every receipt in the file checks (and the chain is in order), else 1."""
    from network.identity import peer_id_for
    from orchestrator.receipts import ReceiptError, verify_chain

    try:
        doc = json.loads(args.file.read_text())
    except (OSError, ValueError) as exc:
        print(f"remote-network: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    if isinstance(doc, dict) and isinstance(doc.get("receipts"), list):
        doc = [r.get("receipt", r) if isinstance(r, dict) else r for r in doc["receipts"]]
    envelopes = doc if isinstance(doc, list) else [doc]
    try:
        keys = {peer_id_for(bytes.fromhex(k)): bytes.fromhex(k) for k in args.key} \
            if args.key else None
    except ValueError:
        print("remote-network: --key takes a public key in hex", file=sys.stderr)
        return 2
    try:
        chain = verify_chain(envelopes, keys=keys)
    except ReceiptError as exc:
        print(f"refused: {exc}")
        return 1
    for i, r in enumerate(chain):
        outputs = ", ".join(f"{name} sha256:{sha}" for name, sha in sorted(r.subjects.items()))
        print(f"ok {i}: peer {r.peer_id} ran job {r.job_key or '-'}: {outputs or 'no outputs'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except IdentityError as exc:
        print(f"remote-network: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"remote-network: invalid setting: {exc.errors()[0].get('msg')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

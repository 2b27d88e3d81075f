"""``remote-network workflow ...``: apply, run, list and schedule workflows on a node.

By default the commands talk to the node of this machine's data dir over plain HTTP on
127.0.0.1, with a token minted from that data dir; ``--url``/``--token`` target any node.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from flows.client.define import DefinitionError
from flows.client.node_client import NodeClient, NodeError

if TYPE_CHECKING:
    from flows.client.submit import Execution

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # stopped waiting at Ctrl-C, as shells report SIGINT


def add_parser(sub: Any) -> None:
    """Add the ``workflow`` command and its subcommands to the CLI's subparsers."""
    workflow = sub.add_parser("workflow", help="define, run and schedule workflows")
    wsub = workflow.add_subparsers(dest="workflow_command", required=True)

    apply = wsub.add_parser("apply", help="create or replace a workflow from a file "
                            "(.yaml, .json, .j2 template or .py)")
    apply.add_argument("file", type=Path)
    apply.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                       help="template parameter (repeatable)")
    apply.add_argument("--run", action="store_true", help="execute it and wait for the result")
    _add_wait_options(apply)
    apply.set_defaults(func=cmd_apply)

    run = wsub.add_parser("run", help="execute a workflow")
    run.add_argument("workflow", metavar="ID_OR_NAME")
    run.add_argument("--wait", action="store_true", help="wait for it to finish, showing "
                     "progress on stderr, and print its results")
    _add_wait_options(run)
    run.set_defaults(func=cmd_run)

    status = wsub.add_parser("status", help="an execution's state, and its results once "
                             "it has ended")
    status.add_argument("execution_id", type=int, metavar="EXECUTION_ID")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    cancel = wsub.add_parser("cancel", help="cancel an execution: its running jobs are "
                             "stopped, the others never start")
    cancel.add_argument("execution_id", type=int, metavar="EXECUTION_ID")
    cancel.set_defaults(func=cmd_cancel)

    listing = wsub.add_parser("list", help="list the node's workflows")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_list)

    schedule = wsub.add_parser(
        "schedule", help="cron schedules: 'schedule WF --cron EXPR', 'schedule list WF', "
        "'schedule delete WF SCHEDULE_ID'")
    schedule.add_argument("words", nargs="+", metavar="[list|delete] ID_OR_NAME [SCHEDULE_ID]")
    schedule.add_argument("--cron", help="cron expression, e.g. '*/5 * * * *'")
    schedule.add_argument("--timezone", default="UTC", help="time zone of the cron (default UTC)")
    schedule.add_argument("--inactive", action="store_true", help="create it paused")
    schedule.add_argument("--json", action="store_true", help="print JSON")
    schedule.set_defaults(func=cmd_schedule)

    for parser in (apply, run, status, cancel, listing, schedule):
        target = parser.add_argument_group("which node")
        target.add_argument("--data-dir", type=Path, help="the local node's data dir (default "
                            "$XDG_DATA_HOME/remote-network); a token is minted from it")
        target.add_argument("--key-passphrase-file", type=Path, default=None)
        target.add_argument("--url", help="the node's API, e.g. http://127.0.0.1:8081 "
                            "(default: the HTTP API of the node running on --data-dir)")
        target.add_argument("--token", help="a JWT for that node (default: minted from the "
                            "data dir)")


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the execution (default 600)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def connect(args: argparse.Namespace) -> NodeClient:
    if args.token:
        url = args.url
        if url is None:
            from orchestrator.address_file import local_http_url
            from orchestrator.config import Settings

            url = local_http_url(Settings(**({"data_dir": args.data_dir} if args.data_dir
                                             else {})))
        return NodeClient(url, args.token)
    return NodeClient.local(args.data_dir, url=args.url,
                            key_passphrase_file=args.key_passphrase_file)


def guarded(func: Callable[[argparse.Namespace, NodeClient], int]) -> Callable[..., int]:
    """Run a subcommand with a client; errors become one line on stderr and an exit code."""

    def handler(args: argparse.Namespace) -> int:
        import logging

        logging.getLogger("remote_network").setLevel(logging.ERROR)
        logging.getLogger("orchestrator").setLevel(logging.ERROR)
        try:
            with connect(args) as client:
                return func(args, client)
        except DefinitionError as exc:
            print(f"remote-network: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (NodeError, TimeoutError) as exc:
            print(f"remote-network: {exc}", file=sys.stderr)
            return EXIT_FAILED

    handler.__name__ = func.__name__
    return handler


# -- subcommands -------------------------------------------------------------------------------
@guarded
def cmd_apply(args: argparse.Namespace, client: NodeClient) -> int:
    from flows.client.files import load
    from flows.client.templates import parse_params

    loaded = load(args.file, parse_params(args.params))
    if loaded.setup is not None:
        loaded.setup(client)
    wf = loaded.workflow
    wid = wf.register(client)
    print(f"workflow '{wf.name}' registered as id {wid} ({len(wf.steps)} steps, "
          f"{len(wf.edges)} connections)", file=sys.stderr if args.json else sys.stdout)
    if not args.run:
        if args.json:
            print(json.dumps({"workflow_id": wid, "name": wf.name, "node_ids": wf.node_ids}))
        return EXIT_OK
    return _run_and_report(client, wid, args)


@guarded
def cmd_run(args: argparse.Namespace, client: NodeClient) -> int:
    from flows.client.submit import start

    wid = int(client.find_workflow(args.workflow)["id"])
    if args.wait:
        return _run_and_report(client, wid, args)
    execution_id = start(client, wid)
    if args.json:
        print(json.dumps({"workflow_id": wid, "execution_id": execution_id}))
    else:
        print(f"execution {execution_id} of workflow {wid} started")
    return EXIT_OK


@guarded
def cmd_status(args: argparse.Namespace, client: NodeClient) -> int:
    from flows.client.submit import TERMINAL, collect

    status = client.get(f"/api/workflow-executions/{args.execution_id}/status")
    if status.get("status") in TERMINAL:
        return _report(collect(client, status), args)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"execution {status['id']} of workflow {status['workflow_id']}: "
              f"{status['status']}, {status.get('progress') or 0}% of its jobs done")
    return EXIT_OK


@guarded
def cmd_cancel(args: argparse.Namespace, client: NodeClient) -> int:
    answer = client.post(f"/api/workflow-executions/{args.execution_id}/cancel")
    print(f"execution {args.execution_id}: {answer.get('status', 'CANCELLED')}")
    return EXIT_OK


@guarded
def cmd_list(args: argparse.Namespace, client: NodeClient) -> int:
    workflows = client.workflows()
    if args.json:
        print(json.dumps(workflows, indent=2))
        return EXIT_OK
    if not workflows:
        print("no workflows")
        return EXIT_OK
    rows = [(str(w["id"]), str(w["name"]), str(w.get("updated_at") or ""),
             str(w.get("description") or "")) for w in workflows]
    _table(("ID", "NAME", "UPDATED", "DESCRIPTION"), rows)
    return EXIT_OK


@guarded
def cmd_schedule(args: argparse.Namespace, client: NodeClient) -> int:
    words = list(args.words)
    action = "add"
    if words[0] in ("list", "delete", "add") and len(words) > 1:
        action = words.pop(0)
    wid = int(client.find_workflow(words[0])["id"])
    base = f"/api/workflows/{wid}/schedules"
    if action == "list":
        answer = client.get(base)
        if args.json:
            print(json.dumps(answer, indent=2))
        elif not answer.get("schedules"):
            print(f"workflow {wid} has no schedules")
        else:
            _table(("ID", "CRON", "TIMEZONE", "ACTIVE", "DEPLOYMENT"),
                   [(str(s["id"]), str(s["cron"]), str(s.get("timezone", "")),
                     "yes" if s.get("active") else "no", str(s.get("deployment_id") or ""))
                    for s in answer["schedules"]])
        return EXIT_OK
    if action == "delete":
        if len(words) != 2 or not words[1].isdigit():
            raise DefinitionError("usage: remote-network workflow schedule delete ID_OR_NAME "
                                  "SCHEDULE_ID")
        client.delete(f"{base}/{int(words[1])}")
        print(f"schedule {words[1]} of workflow {wid} deleted")
        return EXIT_OK
    if len(words) != 1 or not args.cron:
        raise DefinitionError("usage: remote-network workflow schedule ID_OR_NAME --cron "
                              "'*/5 * * * *' [--timezone UTC]")
    answer = client.post(base, json={"cron": args.cron, "timezone": args.timezone,
                                     "active": not args.inactive})
    schedule = answer["schedule"]
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"schedule {schedule['id']} created: workflow {wid} at '{schedule['cron']}' "
              f"({schedule.get('timezone', args.timezone)})")
    return EXIT_OK


# -- output ------------------------------------------------------------------------------------
def _run_and_report(client: NodeClient, workflow_id: int, args: argparse.Namespace) -> int:
    from flows.client.submit import collect, start, wait_until_done

    execution_id = start(client, workflow_id)
    bar = ProgressBar(sys.stderr, execution_id)
    try:
        final = wait_until_done(client, execution_id, timeout=args.timeout, on_progress=bar)
    except KeyboardInterrupt:
        bar.close()
        print(f"remote-network: stopped waiting; execution {execution_id} goes on on the node "
              f"('remote-network workflow status {execution_id}' shows it, "
              f"'remote-network workflow cancel {execution_id}' stops it)", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    return _report(collect(client, final), args)


def _report(execution: Execution, args: argparse.Namespace) -> int:
    """Print an ended execution: its state, each job's, and the final outputs (or JSON)."""
    if args.json:
        print(json.dumps({
            "execution_id": execution.id, "workflow_id": execution.workflow_id,
            "status": execution.status, "error": execution.error,
            "jobs": [{"step": j.step, "job_id": j.job_id, "node_id": j.node_id,
                      "status": j.status, "exit_code": j.exit_code, "error": j.error,
                      "final": j.final, "outputs": j.outputs, "artifacts": j.artifacts}
                     for j in execution.jobs]}, indent=2))
    else:
        print(f"execution {execution.id}: {execution.status}"
              + (f": {execution.error}" if execution.error else ""))
        for job in execution.jobs:
            detail = f" (exit {job.exit_code})" if job.exit_code not in (None, 0) else ""
            print(f"  {job.step}: {job.status}{detail}" + (f": {job.error}" if job.error else ""))
        for job in execution.jobs:
            if not job.final:
                continue
            for key, value in job.outputs.items():
                # LOGS repeats stdout and stderr; mounts are artifacts (see --json).
                if value and key in ("STDOUT", "STDERR"):
                    print(f"--- {job.step} {key.lower()} ---")
                    sys.stdout.write(value if value.endswith("\n") else value + "\n")
    return EXIT_OK if execution.ok else EXIT_FAILED


class ProgressBar:
    """A one-line progress bar on a terminal; on anything else, a line per change."""

    WIDTH = 30

    def __init__(self, stream: TextIO, execution_id: int) -> None:
        self.stream = stream
        self.execution_id = execution_id
        self.tty = stream.isatty()
        self.last: tuple[str, int] | None = None

    def __call__(self, status: dict[str, Any]) -> None:
        try:
            percent = max(0, min(100, int(float(status.get("progress") or 0))))
        except (TypeError, ValueError):
            percent = 0
        state = str(status.get("status", "?"))
        if (state, percent) == self.last:
            return
        self.last = (state, percent)
        filled = self.WIDTH * percent // 100
        line = (f"execution {self.execution_id} [{'#' * filled}{'-' * (self.WIDTH - filled)}] "
                f"{percent:3d}% {state}")
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line (once)."""
        if self.tty and self.last is not None:
            self.stream.write("\n")
            self.stream.flush()
        self.last = None


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())

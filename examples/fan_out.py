"""A template-based workflow: one source feeding three counters in parallel.

    remote-network workflow apply templates/fan_out.yaml.j2 \
        --set source=text-generate --set workers=count-lines,count-words,count-bytes --run
    python examples/fan_out.py [--data-dir DIR] [--url URL]

Renders ``templates/fan_out.yaml.j2`` with parameters, creates the services it names when they
are missing (standalone, from /bin/busybox), runs it and prints each counter's result.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.client.node_client import NodeClient
from flows.client.templates import render_workflow

BUSYBOX = "/bin/busybox"
SOURCE = ("text-lines", ["printf", "one two three\nfour five\nsix\n"])
WORKERS = {
    "count-lines": ["wc", "-l"],
    "count-words": ["wc", "-w"],
    "count-bytes": ["wc", "-c"],
}

workflow = render_workflow("fan_out", {"name": "word-counts", "source": SOURCE[0],
                                       "workers": list(WORKERS), "timeout": 60})


def setup(client: NodeClient) -> None:
    client.ensure_standalone_service(SOURCE[0], BUSYBOX, arguments=SOURCE[1],
                                     description="prints three lines")
    for name, arguments in WORKERS.items():
        client.ensure_standalone_service(name, BUSYBOX, arguments=arguments,
                                         description=" ".join(arguments))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="the local node's data dir")
    parser.add_argument("--url", help="the node's API (default: the local node over HTTP)")
    args = parser.parse_args()
    with NodeClient.local(args.data_dir, url=args.url) as client:
        setup(client)
        workflow.register(client)
        result = workflow.run(client, timeout=300)
    print(f"execution {result.id}: {result.status}")
    for job in result.jobs:
        if job.final:
            print(f"{job.step}: {(job.outputs.get('STDOUT') or '').strip()}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

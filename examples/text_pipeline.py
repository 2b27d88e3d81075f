"""A three-stage text pipeline of standalone services: generate -> upper-case -> count bytes.

    remote-network workflow apply examples/text_pipeline.py --run
    python examples/text_pipeline.py [--data-dir DIR] [--url URL]

``setup`` creates the three services on the node (from /bin/busybox) when they are missing;
``workflow`` is the definition. Run as a script it does both, executes the workflow and prints
each stage's output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.client.define import Workflow
from flows.client.node_client import NodeClient

BUSYBOX = "/bin/busybox"
TEXT = "hello from the remote network\n"
SERVICES = {
    # name: (arguments, description)
    "text-generate": (["printf", TEXT], "prints a line of text"),
    "text-upper": (["tr", "a-z", "A-Z"], "upper-cases its standard input"),
    "text-count": (["wc", "-c"], "counts the bytes of its standard input"),
}

with Workflow("text-pipeline", "generate a line, upper-case it, count its bytes") as workflow:
    gen = workflow.step("text-generate", name="generate", timeout=60)
    upper = workflow.step("text-upper", name="upper", timeout=60)
    count = workflow.step("text-count", name="count", timeout=60, retry_count=1)
    gen.stdout >> upper.stdin
    upper.stdout >> count.stdin


def setup(client: NodeClient) -> None:
    """Create the pipeline's services on the node if they are not there yet."""
    for name, (arguments, description) in SERVICES.items():
        client.ensure_standalone_service(name, BUSYBOX, arguments=arguments,
                                         description=description)


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
        print(f"{job.step:>9}: {job.outputs.get('STDOUT')!r}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

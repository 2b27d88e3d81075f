"""The job protocol: a workflow node that runs on another peer.

One job is one ``job_run`` request over QUIC to the peer that owns the service (the *executing*
peer), plus ``job_cancel``; the peer that orchestrates the workflow is the *requester*::

    requester -> executing   job_run  {job_id, service_id, inputs, env, args, stdin_text,
                                       entrypoint, cmd, timeout}
    executing -> requester   event    {"event": "state", "status": "RUNNING",
                                       "job_execution_id"}    (once it has run RUNNING_HOLD)
                             event    {"event": "log", "stream", "line"}        (while it runs)
                             response the JobResult {outcome, exit_code, started_at, ended_at,
                                                     error, outputs, job_execution_id, started}
    requester -> executing   job_cancel {job_id}  ->  {cancelled}
    requester -> executing   job_key    (a job_run request; nothing runs)  ->  {job_key}
    requester -> provider    job_result {job_key}  ->  {receipt, outputs, exit_code}
                                                       or {receipt: null}

The answer of a completed job carries the executing peer's signed receipt
(``orchestrator.receipts``), which the requester checks before it fetches any output; a request
names the digests of its upstream receipts (``previous_receipts``), which the receipt names in
turn. ``job_key`` is a dry run, admitted as ``job_run`` is; ``job_result`` answers a cached
result of a key (``flows.reuse``) to a peer that may use the service that made it.

A short job costs one round trip: its states travel in the answer, not in frames of their own.
The RUNNING frame waits until the job has run ``RUNNING_HOLD`` seconds (or goes before its first
log line); a job that ends sooner has the answer say ``started``. The terminal state is the
answer's outcome. The requester tells ``on_state`` those states as it would have the frames
(``JobCall.unseen``); a peer that sends the frames (an older one) is read as before.

Inputs travel as artifact references (sha256, size, kind, and the peer that holds the bytes);
the executing peer fetches what it lacks from that peer, by hash, and checks the hash. The
answer's outputs are references held by the executing peer. Outputs wired onward
(``JobRequest.wired_outputs``) stay there, for the downstream peer to fetch directly; every other
output is a result of the workflow and is fetched into the requester's store.

The modules: ``wire`` is the wire form (encode and decode, the ``MAX_*`` bounds of a request, the
typed event frames ``StateEvent``/``LogEvent``), ``session`` the state of one job on each side
(``JobCall``, ``ServedJob``), both without I/O; ``requester`` (``RemoteDispatcher``) and
``server`` (``RemoteJobs``) are the asyncio glue over the ``PeerTransport``.

The requesting side. ``RemoteDispatcher`` is the sibling of ``flows.dispatch.LocalDispatcher``;
a request for this node's own service runs locally, after the inputs held by other peers have
been fetched here. The events of a remote job are decoded as a hostile peer may send them: an
unknown event, a state that is not a RunState or does not follow the last one, and anything after
the job's end are ignored, and a log line is cut to ``MAX_LOG_LINE``. While a job runs, the peer
is pinged every ``liveness_interval`` seconds; ``liveness_misses`` pings in a row unanswered
within ``liveness_timeout`` fail the job with an error naming the peer (a peer killed mid-job is
noticed in seconds, not at the job's timeout) and drop the connection, so a retry dials afresh.

The executing side. ``job_run`` is refused, with a message that says why, when the requester is
blacklisted, the request is malformed or over a bound, the service does not exist here or is not
ACTIVE, or ``orchestrator.peer_policy`` refuses it (``<code>: <why>``: access, command,
interfaces, env, timeout); past the cap on jobs at once (``JobGate``) it waits in the bounded
queue or is refused ``busy``. Otherwise the job gets a job_execution row of its own here
(``requester_peer_id`` = the requester, no workflow of ours, written through
``orchestrator.execution_store``), its inputs are fetched from whichever peer holds them, and it
runs on this node's executor under a job id of ours (``rn-remote-<row>``), with the limits and
isolation the policy gives it. ``job_cancel`` (only from the peer that asked for the job) stops
the container or process, and a requester whose connection goes away has its running jobs
stopped as well; a FAILED result with no exit code after a cancel request is CANCELLED.

DATA services. The encrypted file of a DATA service never leaves its owner. When this node's DATA
service feeds a job on another peer, this node decrypts it into a plain artifact (only for a job
of a workflow that wires it there, to a peer that is not blacklisted, since a blacklisted peer
cannot connect) and offers that by hash, marked ``transient``: the executing peer names it in no
record, so it keeps the bytes no longer than the job needs them. A DATA service of this node run
as a job for another peer is decrypted here, only for a requester the service's access admits
(DATA services are ``private`` unless their owner says otherwise), and answered as ``DATA`` and
``STDOUT`` (and the ``#<interface id>`` aliases). The passphrase never leaves its node.
"""

from flows.job_protocol.requester import FETCH_GRACE, RemoteDispatcher
from flows.job_protocol.server import RUNNING_HOLD, RemoteJobs, default_gate
from flows.job_protocol.session import (
    Ending,
    JobCall,
    Phase,
    ServedJob,
    SessionUsageError,
    input_records,
    outcome_state,
    output_records,
)
from flows.job_protocol.wire import (
    JOB_CANCEL,
    JOB_RUN,
    LOG_STREAMS,
    MAX_ENV,
    MAX_INPUTS,
    MAX_JOB_ID,
    MAX_LIST,
    MAX_LOG_LINE,
    MAX_NAME,
    MAX_TEXT_TOTAL,
    MAX_VALUE,
    JobEvent,
    LogEvent,
    StateEvent,
    WireError,
    WireTimeout,
    answer_progress,
    cancel_from_wire,
    cancel_to_wire,
    cancelled_from_wire,
    cancelled_to_wire,
    event_from_wire,
    parse_timeout,
    ref_from_wire,
    ref_to_wire,
    request_from_wire,
    request_to_wire,
    result_from_wire,
    result_to_wire,
)

__all__ = [
    "FETCH_GRACE",
    "JOB_CANCEL",
    "JOB_RUN",
    "LOG_STREAMS",
    "MAX_ENV",
    "MAX_INPUTS",
    "MAX_JOB_ID",
    "MAX_LIST",
    "MAX_LOG_LINE",
    "MAX_NAME",
    "MAX_TEXT_TOTAL",
    "MAX_VALUE",
    "RUNNING_HOLD",
    "Ending",
    "JobCall",
    "JobEvent",
    "LogEvent",
    "Phase",
    "RemoteDispatcher",
    "RemoteJobs",
    "ServedJob",
    "SessionUsageError",
    "StateEvent",
    "WireError",
    "WireTimeout",
    "answer_progress",
    "cancel_from_wire",
    "cancel_to_wire",
    "cancelled_from_wire",
    "cancelled_to_wire",
    "default_gate",
    "event_from_wire",
    "input_records",
    "outcome_state",
    "output_records",
    "parse_timeout",
    "ref_from_wire",
    "ref_to_wire",
    "request_from_wire",
    "request_to_wire",
    "result_from_wire",
    "result_to_wire",
]

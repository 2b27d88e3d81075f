"""The API contract: ``/openapi.json`` of a real node describes every operation, and
schemathesis' generated requests for each of them never get a 5xx answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from tests.support.node_process import ApiClient, NodeProcess

# Generated cases per operation, valid and invalid requests mixed.
MAX_EXAMPLES = 15
# Operations that would take the node under test down.
EXCLUDED = {("POST", "/api/node/restart")}
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@pytest.fixture(scope="module")
def contract_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    # Login is rate-limited per address; the fuzzer calls it many times from one.
    node = NodeProcess(tmp_path_factory.mktemp("contract"),
                       env={"RN_AUTH_RATE_BURST": "100000"}).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def api(contract_node: NodeProcess) -> Iterator[ApiClient]:
    client = contract_node.client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def document(api: ApiClient) -> dict[str, Any]:
    resp = api.get("/openapi.json")
    assert resp.status_code == 200
    return resp.json()  # type: ignore[no-any-return]


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            yield method.upper(), path, op


def test_every_operation_declares_its_path_parameters_and_answers(
        document: dict[str, Any]) -> None:
    missing = []
    for method, path, op in _operations(document):
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        if declared != set(re.findall(r"{(\w+)}", path)):
            missing.append(f"{method} {path}: path parameters {sorted(declared)}")
        answers = [r for code, r in op["responses"].items() if code.startswith("2")]
        if not any("schema" in c for r in answers for c in r.get("content", {}).values()):
            missing.append(f"{method} {path}: no response schema")
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        if "requestBody" in op and "schema" not in body:
            missing.append(f"{method} {path}: no request body schema")
    assert not missing, "\n".join(missing)


def test_no_generated_request_gets_a_server_error(contract_node: NodeProcess, api: ApiClient,
                                                  document: dict[str, Any],
                                                  tmp_path: Path) -> None:
    schema = schemathesis.openapi.from_dict(document)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api.token}"
    tested, failures = [], []
    # The plain-HTTP listener serves the same app (schemathesis verifies TLS certificates).
    for result in schema.get_all_operations():
        operation = result.ok()  # raises on a schema error (e.g. an undeclared path parameter)
        key = (operation.method.upper(), operation.path)
        if key in EXCLUDED:
            continue
        strategy = st.one_of(*(operation.as_strategy(generation_mode=m) for m in MODES))

        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case: Any) -> None:
            case.call_and_validate(base_url=contract_node.http_url, session=session,
                                   checks=[not_a_server_error], timeout=60)

        try:
            check()
        except Exception as exc:
            failures.append(f"{key[0]} {key[1]}: {exc}")
        tested.append(key)
    expected = {(m, p) for m, p, _op in _operations(document)} - EXCLUDED
    assert set(tested) == expected
    assert not failures, "\n\n".join(failures)

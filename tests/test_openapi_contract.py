"""The contract checker finds what breaks RunPod's OpenAPI document, and names where."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.far.openapi_contract import DOCUMENT_PATH, Contract

RATE_HEADERS = {"RateLimit": '"minute";r=59;t=60', "RateLimit-Policy": '"minute";q=60;w=60'}


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract.load()


def create_body(**extra) -> bytes:
    body = {"name": "ralph-x", "image": "runpod/pytorch:2.4.0", "gpu": {"id": "NVIDIA L4", "count": 1},
            "ports": ["22/tcp"], "env": {"PUBLIC_KEY": "ssh-ed25519 AAAA"}, "dataCenterIds": ["EU-RO-1"],
            "mounts": {"network": [{"volumeId": "vol_1", "path": "/workspace"}]}, **extra}
    return json.dumps(body).encode()


def pod(**changes) -> dict:
    record = {
        "id": "p1", "name": "ralph-x", "status": "RUNNING", "actions": ["stop", "restart", "terminate"],
        "image": "runpod/pytorch:2.4.0", "args": "", "disk": 20, "mounts": {}, "ports": ["22/tcp"], "env": {},
        "registry": None, "cloud": "SECURE", "dataCenterId": "EU-RO-1", "cudaVersion": "12.4",
        "ssh": {"proxy": None, "direct": None}, "template": None, "cost": 0.44, "locked": False,
        "runtime": None, "createdAt": "2026-11-20T10:00:00Z", "startedAt": None,
        "globalNetworking": {"enabled": False}, "gpu": {"id": "NVIDIA L4", "count": 1},
    }
    record.update(changes)
    return record


def test_the_vendored_document_is_the_2026_08_20_contract():
    document = json.loads(DOCUMENT_PATH.read_bytes())
    assert document["openapi"] == "3.1.0" and document["info"]["version"] == "2.0.0"
    assert "/v2/pods" in document["paths"] and "/v2/network-volumes/{id}" in document["paths"]
    assert hashlib.sha256(DOCUMENT_PATH.read_bytes()).hexdigest() == \
        "b8bce61c5a2290d28a7cb2ed53173637166817249986cb18b101b2fd651fd313"  # as in tests/far/README.md


def test_paths_match_templates_most_literal_first(contract):
    assert contract.operation("GET", "/v2/pods/abc").operation_id == "getPod"
    assert contract.operation("GET", "/v2/pods/abc").path_params == {"id": "abc"}
    assert contract.operation("GET", "/v2/registries/delegations").operation_id == "listDelegations"
    assert contract.operation("POST", "/v2/pods/abc/action").operation_id == "podAction"
    assert contract.operation("GET", "/v2/nothing") is None
    assert contract.operation("PUT", "/v2/pods/abc") is None
    assert contract.allowed_methods("/v2/pods/abc") == ["GET", "PATCH", "DELETE"]


def test_a_valid_create_body_passes(contract):
    assert contract.check_request("POST", "/v2/pods", {}, "application/json", create_body()) == []


def test_an_unknown_field_fails_naming_it(contract):
    violations = contract.check_request("POST", "/v2/pods", {}, "application/json",
                                        create_body(gpuTypeId="NVIDIA L4"))
    assert violations == ["body $: additional properties 'gpuTypeId' not allowed"]


def test_a_nested_unknown_field_and_a_bad_value_are_reported_where_they_are(contract):
    body = create_body(gpu={"id": "NVIDIA L4", "count": 0, "cudaVersion": "12.4"})
    violations = contract.check_request("POST", "/v2/pods", {}, "application/json", body)
    assert violations == ["body $.gpu: additional properties 'cudaVersion' not allowed",
                          "body $.gpu.count: 0 is less than the minimum of 1"]


def test_required_fields_of_the_body(contract):
    assert contract.check_request("POST", "/v2/pods", {}, "application/json", b'{"name": "x"}') == \
        ["body $: 'image' is a required property"]  # image is required unless templateId is set
    assert contract.check_request("POST", "/v2/pods", {}, "application/json", b"") == \
        ["createPod requires a request body"]
    assert contract.check_request("POST", "/v2/pods", {}, "text/plain", create_body()) == \
        ["request body has Content-Type text/plain, the contract takes application/json"]


def test_query_parameters_are_checked_as_their_schema_says(contract):
    query = {"include": ["AVAILABILITY"], "product": ["POD"], "count": ["2"], "cloud": ["SECURE"],
             "minCudaVersion": ["12.4"], "cursor": ["anything"]}  # unknown ones are ignored, as by RunPod
    assert contract.check_request("GET", "/v2/catalog/gpus", query, None, b"") == []
    bad = contract.check_request("GET", "/v2/catalog/gpus", {"count": ["two"], "cloud": ["CHEAP"]}, None, b"")
    assert bad == ["query parameter count $: 'two' is not of type 'integer'",
                   "query parameter cloud $: 'CHEAP' is not one of ['SECURE', 'COMMUNITY']"]


def test_a_body_where_none_is_taken(contract):
    assert contract.check_request("DELETE", "/v2/pods/p1", {}, "application/json", b"{}") == \
        ["deletePod takes no request body"]


def test_a_complete_pod_passes_and_one_missing_a_required_field_fails(contract):
    headers = {"Content-Type": "application/json", **RATE_HEADERS}
    assert contract.check_response("GET", "/v2/pods/p1", 200, headers, json.dumps(pod()).encode()) == []
    incomplete = pod()
    del incomplete["cost"]
    assert contract.check_response("GET", "/v2/pods/p1", 200, headers, json.dumps(incomplete).encode()) == \
        ["body $: 'cost' is a required property"]


def test_errors_are_problem_objects_whose_status_matches(contract):
    problem = {"title": "Not Found", "status": 404, "detail": "pod not found"}
    headers = {"Content-Type": "application/problem+json", **RATE_HEADERS}
    assert contract.check_response("GET", "/v2/pods/p1", 404, headers, json.dumps(problem).encode()) == []
    as_json = {**headers, "Content-Type": "application/json"}
    assert contract.check_response("GET", "/v2/pods/p1", 404, as_json, json.dumps(problem).encode()) == \
        ["404 response has Content-Type application/json, the contract declares application/problem+json"]
    wrong = {**problem, "status": 400}
    assert contract.check_response("GET", "/v2/pods/p1", 404, headers, json.dumps(wrong).encode()) == \
        ["problem status 400 differs from HTTP status 404"]
    assert contract.check_response("GET", "/v2/pods/p1", 404, headers, b"<html>") == \
        ["404 response body is not JSON: Expecting value: line 1 column 1 (char 0)"]


def test_declared_headers_must_be_sent(contract):
    problem = json.dumps({"title": "Too Many Requests", "status": 429, "detail": "slow down"}).encode()
    headers = {"Content-Type": "application/problem+json", "RateLimit": '"minute";r=0;t=12'}
    assert contract.check_response("POST", "/v2/pods", 429, headers, problem) == [
        "429 response lacks the Retry-After header", "429 response lacks the RateLimit-Policy header"]
    headers |= {"Retry-After": "soon", "RateLimit-Policy": '"minute";q=60;w=60'}
    assert contract.check_response("POST", "/v2/pods", 429, headers, problem) == \
        ["header Retry-After $: 'soon' is not of type 'integer'"]


def test_no_content_means_no_body(contract):
    assert contract.check_response("DELETE", "/v2/pods/p1", 204, RATE_HEADERS, b"") == []
    assert contract.check_response("DELETE", "/v2/pods/p1", 204, RATE_HEADERS, b"{}") == \
        ["204 response of deletePod has a body; the contract declares none"]


def test_an_undeclared_operation_is_a_violation(contract):
    assert contract.check_response("GET", "/v2/nothing", 200, {}, b"{}") == \
        ["no operation GET /v2/nothing in the contract"]

"""RunPod's REST API v2 contract, and checks of one request or one response against it.

The contract is ``runpod-openapi-v2.json`` beside this file: a byte copy of RunPod's OpenAPI 3.1 document
(RunPod's docs repository, ``api-reference-v2/openapi.json``, version of 2026-08-20; served live at
https://api.runpod.io/v2/openapi.json, which keeps moving). Schemas are JSON Schema 2020-12; ``$ref``s
into ``#/components/...`` resolve through a ``referencing`` registry holding the whole document.

Both checks return human-readable violations (an empty list when the message keeps the contract), each
naming where it went wrong: ``body $.gpu: Unevaluated properties are not allowed ('bogus' was unexpected)``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT_PATH = Path(__file__).with_name("runpod-openapi-v2.json")
_BASE_URI = "urn:runpod:openapi-v2"
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@dataclass(frozen=True)
class Operation:
    """One operation of the contract, matched to a concrete request path."""

    method: str  # upper case
    template: str  # "/v2/pods/{id}"
    operation_id: str
    path_params: dict[str, str]
    spec: dict[str, Any]  # the operation object
    parameters: tuple[dict[str, Any], ...]  # path-level and operation-level, $refs resolved


class Contract:
    """An OpenAPI document made checkable: ``Contract.load()`` reads the vendored one once."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry = Registry().with_resource(_BASE_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}

    @classmethod
    @functools.cache
    def load(cls) -> Contract:
        return cls(json.loads(DOCUMENT_PATH.read_bytes()))

    # ---- finding things ----------------------------------------------------------------------

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow ``$ref``s (``#/components/...``) until a node without one."""
        while "$ref" in node:
            node = self._pointer(node["$ref"])
        return node

    def _pointer(self, ref: str) -> dict[str, Any]:
        ref = ref.removeprefix(_BASE_URI)
        if not ref.startswith("#/"):
            raise ValueError(f"only references into the document are supported, not {ref!r}")
        node: Any = self.document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def path_templates(self, path: str) -> list[tuple[str, dict[str, str]]]:
        """Templates matching a concrete path, most literal first, with the (decoded) path parameters."""
        segments = path.rstrip("/").split("/") if path != "/" else [""]
        found: list[tuple[int, str, dict[str, str]]] = []
        for template in self.document["paths"]:
            parts = template.split("/")
            if len(parts) != len(segments):
                continue
            params: dict[str, str] = {}
            literal = 0
            for part, segment in zip(parts, segments, strict=True):
                if part.startswith("{") and part.endswith("}"):
                    if not segment:
                        break
                    params[part[1:-1]] = unquote(segment)
                elif part == segment:
                    literal += 1
                else:
                    break
            else:
                found.append((literal, template, params))
        found.sort(key=lambda item: -item[0])
        return [(template, params) for _, template, params in found]

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation serving ``method`` on a concrete path, or None when the contract has none."""
        for template, params in self.path_templates(path):
            item = self.document["paths"][template]
            spec = item.get(method.lower())
            if spec is None:
                continue
            parameters = tuple(self.resolve(p) for p in (*item.get("parameters", ()), *spec.get("parameters", ())))
            return Operation(method.upper(), template, spec["operationId"], params, spec, parameters)
        return None

    def allowed_methods(self, path: str) -> list[str]:
        """Methods the contract offers on a concrete path (for 405's ``Allow``)."""
        for template, _ in self.path_templates(path):
            return [m.upper() for m in self.document["paths"][template] if m in _METHODS]
        return []

    # ---- checking ----------------------------------------------------------------------------

    def check_request(self, method: str, path: str, query: Mapping[str, list[str]],
                      content_type: str | None, body: bytes) -> list[str]:
        """Violations of one request: unknown operation, missing or malformed parameters, body."""
        op = self.operation(method, path)
        if op is None:
            return [f"no operation {method.upper()} {path} in the contract"]
        violations: list[str] = []
        for param in op.parameters:
            if param["in"] != "query":
                continue  # path parameters matched the template; headers are not checked
            name = param["name"]
            values = query.get(name)
            if not values:
                if param.get("required"):
                    violations.append(f"query parameter {name} is required")
                continue
            schema = param.get("schema", {})
            value = self._coerce(values[-1], schema)
            violations += self._errors(f"query parameter {name}", schema, value)
        request_body = op.spec.get("requestBody")
        if request_body is None:
            if body:
                violations.append(f"{op.operation_id} takes no request body")
            return violations
        request_body = self.resolve(request_body)
        if not body:
            if request_body.get("required"):
                violations.append(f"{op.operation_id} requires a request body")
            return violations
        media = _media_type(content_type)
        content = request_body.get("content", {})
        if media not in content:
            return violations + [f"request body has Content-Type {media or 'none'}, "
                                 f"the contract takes {', '.join(content)}"]
        try:
            instance = json.loads(body)
        except ValueError as exc:
            return violations + [f"request body is not JSON: {exc}"]
        return violations + self._errors("body", content[media].get("schema", {}), instance)

    def check_response(self, method: str, path: str, status: int, headers: Mapping[str, str],
                       body: bytes) -> list[str]:
        """Violations of one response to ``method path``: undeclared status, content type, body, headers.

        Headers the response object declares (``RateLimit``, ``RateLimit-Policy``, ``Retry-After``) must
        be present and fit their schema: the document calls the rate-limit pair optional only for
        rate-limit-exempt callers, and an emulated account is not one.
        """
        op = self.operation(method, path)
        if op is None:
            return [f"no operation {method.upper()} {path} in the contract"]
        responses = op.spec.get("responses", {})
        declared = responses.get(str(status)) or responses.get("default")
        if declared is None:
            return [f"{op.operation_id} declares no response {status}"]
        declared = self.resolve(declared)
        lowered = {k.lower(): v for k, v in headers.items()}
        violations: list[str] = []
        for name, header in declared.get("headers", {}).items():
            header = self.resolve(header)
            value = lowered.get(name.lower())
            if value is None:
                violations.append(f"{status} response lacks the {name} header")
                continue
            schema = header.get("schema", {})
            violations += self._errors(f"header {name}", schema, self._coerce(value, schema))
        content = declared.get("content")
        if not content:
            if body:
                violations.append(f"{status} response of {op.operation_id} has a body; the contract declares none")
            return violations
        media = _media_type(lowered.get("content-type"))
        if media not in content:
            return violations + [f"{status} response has Content-Type {media or 'none'}, "
                                 f"the contract declares {', '.join(content)}"]
        try:
            instance = json.loads(body)
        except ValueError as exc:
            return violations + [f"{status} response body is not JSON: {exc}"]
        violations += self._errors("body", content[media].get("schema", {}), instance)
        if media == "application/problem+json" and isinstance(instance, dict) \
                and instance.get("status") != status:
            violations.append(f"problem status {instance.get('status')!r} differs from HTTP status {status}")
        return violations

    def _errors(self, where: str, schema: dict[str, Any], instance: Any) -> list[str]:
        validator = self._validator(schema)
        messages = []
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.path)):
            # anyOf/oneOf failures carry their branches' errors; the closest one says more
            precise: ValidationError = best_match(error.context) if error.context else error
            if precise.validator == "unevaluatedProperties":
                message = self._unknown_properties(precise)
                if message is None:
                    continue
            else:
                message = precise.message
            messages.append(f"{where} {precise.json_path}: {message}")
        return messages

    def _unknown_properties(self, error: ValidationError) -> str | None:
        """The real server's wording for properties no subschema declares, or None when every one is
        declared: a property of a branch that failed for another reason is reported as unevaluated too
        (2020-12 drops a failed branch's annotations), and that error already says what is wrong."""
        declared = self._declared_properties(error.schema)
        unknown = [name for name in error.instance if name not in declared]  # type: ignore[union-attr]  # an object
        if not unknown:
            return None
        return "additional properties " + ", ".join(repr(n) for n in unknown) + " not allowed"

    def _declared_properties(self, schema: Any) -> set[str]:
        if not isinstance(schema, dict):
            return set()
        schema = self.resolve(schema)
        names = set(schema.get("properties", {}))
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(key, ()):
                names |= self._declared_properties(sub)
        for key in ("then", "else"):
            names |= self._declared_properties(schema.get(key))
        return names

    def _validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            # Local refs point into the registered document, where its own "#/components/..." resolve.
            validator = Draft202012Validator(_rebase(schema), registry=self._registry)
            self._validators[key] = validator
        return validator

    def _coerce(self, raw: str, schema: dict[str, Any]) -> Any:
        """A query or header string as the JSON value its schema describes (form style, comma lists)."""
        schema = self.resolve(schema)
        kind = schema.get("type")
        if kind == "array":
            items = schema.get("items", {})
            return [self._coerce(part, items) for part in raw.split(",")]
        if kind == "integer":
            try:
                return int(raw)
            except ValueError:
                return raw
        if kind == "number":
            try:
                return float(raw)
            except ValueError:
                return raw
        if kind == "boolean":
            return {"true": True, "false": False}.get(raw, raw)
        return raw


def _rebase(node: Any) -> Any:
    """Rewrite local refs ("#/components/...") to point into the registered document."""
    if isinstance(node, dict):
        return {k: (_BASE_URI + v if k == "$ref" and isinstance(v, str) and v.startswith("#") else _rebase(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(v) for v in node]
    return node


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()

"""GET /api/openapi.json (anonymous): the OpenAPI 3.1 document of every HTTP endpoint of the app.

The document is generated, lazily on the first request and then cached, from ``ENDPOINTS``
(``operations.py``: one row per HTTP function, keyed by function name, the operationId) and from the
pydantic models: the query and body
models the endpoints validate requests with, and the response models below, which mirror the dicts the
endpoints answer. Nothing is read at import and nothing is read per request but the settings' vault names:
the ``vault`` parameter's schema is the list of vaults this deployment manages (``served``), so what the
document calls valid is what the service accepts.

tests/functions/test_openapi.py fails when the app registers an HTTP function ``ENDPOINTS`` does not
describe (or the reverse, or a route, method or auth level differs), and test_openapi_responses.py calls
every endpoint and validates each answer against the schema documented for its status and media type.
A new HTTP function therefore needs a row in operations.py (with a response model mirroring what it
answers), a sample request in that file's SAMPLES, and a scenario giving each success and each 404/409 it
documents.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import azure.functions as func
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from shared.bootstrap import get_container
from shared.config import ConfigurationError
from shared.domain.secrets import VAULT

# Imported for what importing does: the index registers the app's HTTP functions in ``routes.ROUTES``.
from shared.entrypoints import index  # noqa: F401
from shared.entrypoints.answers import Problem
from shared.entrypoints.auth import PRINCIPAL_HEADER
from shared.entrypoints.http import (
    BODY_MEDIA_TYPE,
    PROBLEM_JSON,
    VAULT_PARAMETER,
)
from shared.entrypoints.operations import ENDPOINTS, PATH_PARAMETERS, Endpoint

OPENAPI_VERSION = "3.1.0"
#: The API's version: the project's (pyproject.toml; a test keeps them equal).
API_VERSION = "0.1.0"
ROUTE_PREFIX = "/api"
REF_TEMPLATE = "#/components/schemas/{model}"

TAGS = [
    {"name": "meta", "description": "Health and this document (anonymous)."},
    {"name": "audit", "description": "The tamper-evident audit trail and suspicious-activity findings."},
    {"name": "secrets", "description": "Managed secrets: onboarding, policy, rotation, rollback, deletion."},
    {"name": "revocations", "description": "Emergency revocation: request, approve, execute, break-glass."},
    {
        "name": "compliance",
        "description": "Evidence for audits: a period's rotations, approvals and integrity.",
    },
]

STATUS_NOTES: dict[int, str] = {
    400: "Bad Request: a query parameter, route parameter or body field is invalid (`parameter` names it "
    "when it can), or an unknown one was sent.",
    401: "Unauthorized: no verified caller (the `x-ms-client-principal` header is missing, malformed, or "
    "not vouched for by App Service Authentication). The Functions host also answers 401, without a body, "
    "when the function key is missing or wrong.",
    403: "Forbidden: the caller lacks the role.",
    404: "Not Found.",
    409: "Conflict: the current state does not allow it (a concurrent change, a transition the state "
    "forbids, the service's own secret, a lease held by another write, a target's refusal).",
    415: f"Unsupported Media Type: the body must be `{BODY_MEDIA_TYPE}` (a JSON object, `{{}}` at least).",
    500: "Internal Server Error. With `changed: true` the change WAS made but its record could not be "
    "written: the problem names it and its ids; do not repeat it.",
    503: "Service Unavailable: a dependency is unavailable or the service is misconfigured; nothing was "
    "changed: try again.",
}

SECURITY_SCHEMES = {
    "functionKey": {
        "type": "apiKey",
        "in": "header",
        "name": "x-functions-key",
        "description": "The function key (AuthLevel.FUNCTION), as a header.",
    },
    "functionKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "code",
        "description": "The function key (AuthLevel.FUNCTION), as the `code` query parameter.",
    },
    "clientPrincipal": {
        "type": "apiKey",
        "in": "header",
        "name": PRINCIPAL_HEADER,
        "description": "The caller, as App Service Authentication (Easy Auth) passes it after validating "
        "the caller's Entra ID token: base64 JSON with the `roles` claims. The service trusts it only when "
        "the platform vouches for it; an operation needs one of the roles in its `x-roles`.",
    },
}
PROTECTED: list[dict[str, list[str]]] = [
    {"functionKey": [], "clientPrincipal": []},
    {"functionKeyQuery": [], "clientPrincipal": []},
]


# -- the document -------------------------------------------------------------------------------------


class SchemaNames(GenerateJsonSchema):
    """Component names without a private model's leading underscore (``_Policy`` is ``Policy``); pydantic
    falls back to a qualified name when two models would share one."""

    def normalize_name(self, name: str) -> str:
        return super().normalize_name(name).lstrip("_") or name


def _models() -> list[type[BaseModel]]:
    """Every model the document refers to, in table order, once."""
    found: dict[type[BaseModel], None] = {}
    for endpoint in ENDPOINTS.values():
        for model in (endpoint.query, endpoint.body, *endpoint.ok.values(), *endpoint.problems.values()):
            if model is not None:
                found[model] = None
        if endpoint.problem_statuses() - set(endpoint.problems):
            found[Problem] = None
    return list(found)


def model_schemas() -> tuple[dict[type[BaseModel], str], dict[str, Any]]:
    """The component name of every model the document refers to, and every component schema (before the
    unreferenced ones are dropped)."""
    models = _models()
    refs, definitions = models_json_schema(
        [(model, "validation") for model in models], ref_template=REF_TEMPLATE, schema_generator=SchemaNames
    )
    names = {model: refs[(model, "validation")]["$ref"].rsplit("/", 1)[1] for model in models}
    return names, dict(definitions.get("$defs", {}))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(model=name)}


def _without_null(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A query parameter's schema: present or absent, never null."""
    out = {k: v for k, v in schema.items() if not (k == "default" and v is None)}
    options = out.pop("anyOf", None)
    if options is None:
        return out
    rest = [option for option in options if option != {"type": "null"}]
    return {**out, **(rest[0] if len(rest) == 1 else {"anyOf": rest})}


def _parameters(endpoint: Endpoint, query: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, **PATH_PARAMETERS[name]}
        for name in re.findall(r"\{(\w+)\}", endpoint.route)
    ]
    if query is not None:
        required = set(query.get("required", ()))
        for name, schema in query.get("properties", {}).items():
            override = endpoint.parameters.get(name)
            params.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": {**_without_null(schema), **(override or {})},
                }
            )
    use = endpoint.registered.vault
    if use is not None:
        schema = {"type": "string", "pattern": f"^{VAULT}$"}
        description = VAULT_USES[use]
        params.append(
            {
                "name": VAULT_PARAMETER,
                "in": "query",
                "required": False,
                "description": description,
                "schema": schema,
            }
        )
    return params


#: What the Functions host (Kestrel) answers before the function runs, on every route.
HOST_LIMITS = {
    414: "URI Too Long: the request line is over the host's 8 KiB (the Functions host answers, no body).",
    431: "Request Header Fields Too Large: over 32 KiB of headers or more than 100 of them (the host's).",
}


#: What ``?vault=`` means, by how an endpoint takes it (shared.entrypoints.http.VaultUse).
VAULT_USES = {
    "one": "The vault of the secret, by its short name (`fleet` for fleet.vault.azure.net). Required when "
    "the service manages several vaults (KEY_VAULT_URLS); otherwise it may be left out. A vault the "
    "service does not manage is 400.",
    "any": "Only this vault, by its short name; left out: every vault the service manages. A vault the "
    "service does not manage is 400.",
}


def _operation(
    function_name: str, endpoint: Endpoint, names: Mapping[type[BaseModel], str], schemas: Mapping[str, Any]
) -> dict[str, Any]:
    notes = [endpoint.description] if endpoint.description else []
    op: dict[str, Any] = {"operationId": function_name, "tags": [endpoint.tag], "summary": endpoint.summary}
    if endpoint.anonymous:
        op["security"] = []
    else:
        roles = [role.value for role in endpoint.roles]
        op["security"] = PROTECTED
        op["x-roles"] = roles
        notes.append("Roles (any one): " + ", ".join(f"`{role}`" for role in roles) + ".")
        refused = "Unknown query parameters are"
        if endpoint.body is not None:
            refused = (
                "Query parameters other than `vault` are"
                if endpoint.registered.vault
                else "Query parameters are"
            )
        notes.append(f"{refused} refused (400).")
    if notes:
        op["description"] = " ".join(notes)
    query = schemas[names[endpoint.query]] if endpoint.query is not None else None
    op["parameters"] = _parameters(endpoint, query)
    if endpoint.body is not None:
        # Required even where every field is optional (`{}`): a write without a JSON body is refused, so
        # a cross-site form or a body-less simple request cannot act.
        op["requestBody"] = {
            "required": True,
            "content": {BODY_MEDIA_TYPE: {"schema": _ref(names[endpoint.body])}},
        }
    problems = endpoint.problem_statuses()
    responses: dict[str, Any] = {}
    for status in sorted(set(endpoint.ok) | problems):
        content: dict[str, Any] = {}
        if status in endpoint.ok:
            content["application/json"] = {"schema": _ref(names[endpoint.ok[status]])}
        if status in problems:
            content[PROBLEM_JSON] = {"schema": _ref(names[endpoint.problems.get(status, Problem)])}
        default = STATUS_NOTES.get(status) if status in problems else None
        response: dict[str, Any] = {
            "description": endpoint.notes.get(status) or default or HTTPStatus(status).phrase,
            "content": content,
        }
        headers = dict(endpoint.headers.get(status, {}))
        if status == 401:
            headers["WWW-Authenticate"] = "`Bearer`."
        if headers:
            response["headers"] = {
                name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
            }
        responses[str(status)] = response
    for status, text in HOST_LIMITS.items():  # the host's, before any function runs: no problem body
        responses[str(status)] = {"description": text}
    op["responses"] = dict(sorted(responses.items()))
    return op


def _references(node: Any) -> set[str]:
    if isinstance(node, Mapping):
        found = {node["$ref"].rsplit("/", 1)[1]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _references(value)
        return found
    if isinstance(node, list):
        return set().union(*(_references(item) for item in node))
    return set()


def build() -> dict[str, Any]:
    """The document, built from ENDPOINTS and the models (uncached: see ``document``)."""
    names, schemas = model_schemas()
    paths: dict[str, dict[str, Any]] = {}
    for function_name, endpoint in ENDPOINTS.items():
        operation = _operation(function_name, endpoint, names, schemas)
        paths.setdefault("/" + endpoint.route, {})[endpoint.method.lower()] = operation
    # Only what the paths refer to (query models are inlined as parameters), transitively.
    used, todo = set[str](), _references(paths)
    while todo:
        name = todo.pop()
        used.add(name)
        todo |= _references(schemas[name]) - used
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Secret lifecycle service",
            "version": API_VERSION,
            "description": "Rotation, expiry, revocation and audit of Azure Key Vault secrets. No response "
            "ever carries a secret value. Errors are RFC 9457 problems (`application/problem+json`).",
        },
        "servers": [{"url": ROUTE_PREFIX}],
        "tags": TAGS,
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {name: schemas[name] for name in sorted(used)},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


@functools.cache
def _document_text() -> str:
    return json.dumps(build(), separators=(",", ":"))


def document() -> dict[str, Any]:
    """The document (built on first use, then cached); a fresh copy each call."""
    loaded: dict[str, Any] = json.loads(_document_text())
    return loaded


@functools.cache
def served(vaults: tuple[str, ...]) -> str:
    """The document as this deployment serves it: ``vault`` is one of ``vaults`` (the names it manages)."""
    served = document()
    for operation in (op for path in served["paths"].values() for op in path.values()):
        for parameter in operation["parameters"]:
            if parameter["name"] == VAULT_PARAMETER and parameter["in"] == "query":
                parameter["schema"] = {"type": "string", "enum": list(vaults)}
    return json.dumps(served, separators=(",", ":"))


def openapi() -> func.HttpResponse:
    try:
        text = served(tuple(kv.name for kv in get_container().settings.key_vaults))
    except ConfigurationError:  # no vault to name: the generic document (its pattern)
        text = _document_text()
    return func.HttpResponse(
        text,
        status_code=200,
        mimetype="application/json",
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )

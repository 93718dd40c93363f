"""GET /api/openapi.json through the registered function: the document describes exactly the HTTP functions
the app registers (route, method, auth level), its request schemas are the pydantic models the endpoints
validate with, and it holds together as an OpenAPI 3.1 document (structural checks: no validator is a
dependency). That the endpoints' answers match it is test_openapi_responses.py's business."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from pydantic import BaseModel

from shared.config import ConfigurationError
from shared.entrypoints import openapi
from shared.entrypoints.openapi import ENDPOINTS, PATH_PARAMETERS, REF_TEMPLATE, SchemaNames

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
COMPONENT_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")


def _get(functions: dict[str, Any], path: str = "http://localhost/api/openapi.json") -> func.HttpResponse:
    request = func.HttpRequest("GET", path, headers={}, params={}, route_params={}, body=b"")
    response: func.HttpResponse = functions["openapi"].get_user_function()(request)
    return response


@pytest.fixture(scope="module")
def doc(functions: dict[str, Any]) -> dict[str, Any]:
    response = _get(functions)
    assert response.status_code == 200
    loaded: dict[str, Any] = json.loads(response.get_body())
    return loaded


def _http_functions(functions: dict[str, Any]) -> dict[str, tuple[str, set[str], func.AuthLevel | None]]:
    found = {}
    for name, f in functions.items():
        trigger = f.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            methods = {str(m.value if hasattr(m, "value") else m).upper() for m in trigger.methods or ()}
            found[name] = (trigger.route, methods, trigger.auth_level)
    return found


def _component(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    prefix = REF_TEMPLATE.format(model="")
    assert ref.startswith(prefix), ref
    schema: dict[str, Any] = doc["components"]["schemas"][ref.removeprefix(prefix)]
    return schema


def _operations(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (path, method, operation)."""
    return {
        op["operationId"]: (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def _model_schema(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE, schema_generator=SchemaNames)
    defs = schema.pop("$defs", {})
    return schema, defs


# -- the function ---------------------------------------------------------------------------------------


def test_the_function_answers_the_document(functions: dict[str, Any], doc: dict[str, Any]) -> None:
    response = _get(functions)
    assert (response.status_code, response.mimetype, response.charset) == (200, "application/json", "utf-8")
    assert doc["openapi"] == "3.1.0"
    assert _get(functions, "http://localhost/api/openapi.json?x=1").status_code == 200  # ignored


def _vault_schemas(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        p["schema"]
        for _, _, op in _operations(doc).values()
        for p in op["parameters"]
        if p["name"] == "vault" and p["in"] == "query"
    ]


class _Settings:
    def __init__(self, names: list[str] | None) -> None:
        self.names = names

    @property
    def key_vaults(self) -> list[Any]:
        if self.names is None:
            raise ConfigurationError("KEY_VAULT_URL", "missing")
        return [type("Vault", (), {"name": name})() for name in self.names]


def test_it_reads_the_vault_names_only_and_lists_them(functions: dict[str, Any], use_container: Any) -> None:
    class OnlySettings:
        def __init__(self, names: list[str] | None) -> None:
            self.settings = _Settings(names)

        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the openapi function touched the container ({name})")

    use_container(OnlySettings(["fleet", "fleet-eu"]))
    served = json.loads(_get(functions).get_body())
    schemas = _vault_schemas(served)
    assert schemas and all(s == {"type": "string", "enum": ["fleet", "fleet-eu"]} for s in schemas)
    generic = openapi.document()  # everything else is the generic document
    assert _vault_schemas(generic)[0]["pattern"]
    for schema in _vault_schemas(generic):
        schema.clear()
        schema.update({"type": "string", "enum": ["fleet", "fleet-eu"]})
    assert served == generic
    use_container(OnlySettings(None))  # no vault to name: the generic document
    assert json.loads(_get(functions).get_body()) == openapi.document()


def test_nothing_is_built_at_import_and_no_setting_is_needed() -> None:
    """A fresh interpreter with an empty environment: importing the app builds nothing; the first
    document is built without a single setting."""
    code = (
        "import function_app\n"
        "from shared.entrypoints import openapi\n"
        "assert openapi._document_text.cache_info().currsize == 0, 'built at import'\n"
        "print(len(openapi.document()['paths']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) == len({e.route for e in ENDPOINTS.values()})


def test_the_version_is_the_projects(doc: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert doc["info"]["version"] == project["version"]
    assert doc["servers"] == [{"url": "/api"}]


# -- the table and the app ------------------------------------------------------------------------------


def test_the_table_describes_exactly_the_http_functions_the_app_registers(functions: dict[str, Any]) -> None:
    registered = _http_functions(functions)
    undescribed = sorted(set(registered) - set(ENDPOINTS))
    assert not undescribed, f"add a row to shared.entrypoints.operations.ENDPOINTS for {undescribed}"
    unregistered = sorted(set(ENDPOINTS) - set(registered))
    assert not unregistered, f"ENDPOINTS describes functions the app does not register: {unregistered}"
    for name, (route, methods, auth_level) in registered.items():
        endpoint = ENDPOINTS[name]
        assert (endpoint.route, {endpoint.method}) == (route, methods), name
        expected = func.AuthLevel.ANONYMOUS if endpoint.anonymous else func.AuthLevel.FUNCTION
        assert (auth_level or func.AuthLevel.FUNCTION) == expected, name


def test_paths_are_the_registered_routes_and_methods(functions: dict[str, Any], doc: dict[str, Any]) -> None:
    registered = {
        ("/" + route, method.lower(), name)
        for name, (route, methods, _) in _http_functions(functions).items()
        for method in methods
    }
    documented = {(path, method, name) for name, (path, method, _) in _operations(doc).items()}
    assert documented == registered


def test_anonymous_operations_need_no_key_and_no_principal(doc: dict[str, Any]) -> None:
    for name, (_, _, op) in _operations(doc).items():
        if ENDPOINTS[name].anonymous:
            assert op["security"] == [] and "x-roles" not in op, name
            assert not {"400", "401", "403"} & set(op["responses"]), name
        else:
            schemes = [set(requirement) for requirement in op["security"]]
            assert schemes == [{"functionKey", "clientPrincipal"}, {"functionKeyQuery", "clientPrincipal"}]
            assert op["x-roles"] == [role.value for role in ENDPOINTS[name].roles], name
            assert all(role in op["description"] for role in op["x-roles"]), name
    assert {n for n, e in ENDPOINTS.items() if e.anonymous} == {"health", "openapi"}
    keys = doc["components"]["securitySchemes"]
    assert (keys["functionKey"]["in"], keys["functionKey"]["name"]) == ("header", "x-functions-key")
    assert (keys["functionKeyQuery"]["in"], keys["functionKeyQuery"]["name"]) == ("query", "code")
    principal = keys["clientPrincipal"]
    assert (principal["in"], principal["name"]) == ("header", "x-ms-client-principal")


# -- schemas from the models ----------------------------------------------------------------------------


def test_request_bodies_are_the_models_schemas(doc: dict[str, Any]) -> None:
    for name, (_, _, op) in _operations(doc).items():
        model = ENDPOINTS[name].body
        if model is None:
            assert "requestBody" not in op, name
            continue
        body = op["requestBody"]
        assert list(body["content"]) == ["application/json"], name
        expected, defs = _model_schema(model)
        assert _component(doc, body["content"]["application/json"]["schema"]["$ref"]) == expected, name
        for def_name, def_schema in defs.items():
            assert doc["components"]["schemas"][def_name] == def_schema, (name, def_name)
        assert body["required"] is True, name  # {} at least: a write without a body is refused


def test_response_schemas_are_the_response_models(doc: dict[str, Any]) -> None:
    for name, (_, _, op) in _operations(doc).items():
        endpoint = ENDPOINTS[name]
        for status, model in endpoint.ok.items():
            ref = op["responses"][str(status)]["content"]["application/json"]["schema"]["$ref"]
            assert _component(doc, ref) == _model_schema(model)[0], (name, status)
        for status in endpoint.problem_statuses():
            ref = op["responses"][str(status)]["content"]["application/problem+json"]["schema"]["$ref"]
            model = endpoint.problems.get(status, openapi.Problem)
            assert _component(doc, ref) == _model_schema(model)[0], (name, status)


def test_query_parameters_are_the_query_models_fields(doc: dict[str, Any]) -> None:
    for name, (_, _, op) in _operations(doc).items():
        endpoint = ENDPOINTS[name]
        query = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
        vault = query.pop("vault", None)  # what the endpoint's vault use says, whatever its model
        assert (vault is not None) == (endpoint.registered.vault is not None), name
        if vault is not None:
            assert (
                vault["description"] == openapi.VAULT_USES[endpoint.registered.vault]
                and not vault["required"]
            )
        model = endpoint.query
        if model is None:
            assert query == {}, name
            assert endpoint.parameters == {}, name
            continue
        # A parameter is a field by its alias where it has one (``from``, a Python keyword, is ``start``).
        fields = {field.alias or field_name: field for field_name, field in model.model_fields.items()}
        assert set(query) == set(fields), name
        assert set(endpoint.parameters) <= set(fields), f"{name}: a schema override names no parameter"
        properties = _model_schema(model)[0]["properties"]
        for param, spec in query.items():
            assert spec["required"] == fields[param].is_required(), (name, param)
            expected = dict(properties[param])
            options = [o for o in expected.pop("anyOf", []) if o != {"type": "null"}]
            if expected.get("default", "") is None:
                del expected["default"]
            # The model's constraints, and what the document says beyond them (never instead of them).
            override = endpoint.parameters.get(param, {})
            documented = {**expected, **(options[0] if options else {}), **override}
            assert spec["schema"] == documented, (name, param)


def test_path_parameters_are_the_routes(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        names = re.findall(r"\{(\w+)\}", path)
        for method, op in item.items():
            declared = [p for p in op["parameters"] if p["in"] == "path"]
            assert [p["name"] for p in declared] == names, (path, method)
            for p in declared:
                assert p["required"] is True and p["schema"] == PATH_PARAMETERS[p["name"]]["schema"]


def test_every_protected_operation_documents_the_refusals_it_can_answer(doc: dict[str, Any]) -> None:
    for name, (_, _, op) in _operations(doc).items():
        endpoint = ENDPOINTS[name]
        expected = {str(s) for s in set(endpoint.ok) | endpoint.problem_statuses() | set(openapi.HOST_LIMITS)}
        assert set(op["responses"]) == expected, name
        for status in openapi.HOST_LIMITS:  # the host's answers: no body
            assert "content" not in op["responses"][str(status)], (name, status)
        if not endpoint.anonymous:
            assert {"400", "401", "403", "500", "503"} <= set(op["responses"]), name
        if endpoint.body is not None:
            assert "415" in op["responses"], name
        for status, response in op["responses"].items():
            if int(status) >= 400 and int(status) in endpoint.problem_statuses():
                assert "application/problem+json" in response["content"], (name, status)


def test_the_problem_schema_is_rfc_9457(doc: dict[str, Any]) -> None:
    problem = doc["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "parameter", "changed"} <= set(problem["properties"])
    assert set(problem["required"]) == {"type", "title", "status"}
    assert problem["additionalProperties"] is True  # extension members: the ids of a change, a request


# -- structure ------------------------------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


def structural_problems(doc: dict[str, Any]) -> list[str]:
    """What an OpenAPI 3.1 validator would refuse, as far as this document uses the format."""
    found: list[str] = []
    if set(doc) - {"openapi", "info", "servers", "tags", "paths", "components"}:
        found.append(f"unexpected top-level fields {set(doc)}")
    if not re.fullmatch(r"3\.1\.\d+", doc.get("openapi", "")):
        found.append("openapi is not 3.1.x")
    if not (doc.get("info", {}).get("title") and doc["info"].get("version")):
        found.append("info needs a title and a version")
    schemas = doc.get("components", {}).get("schemas", {})
    schemes = doc.get("components", {}).get("securitySchemes", {})
    found += [f"component name {name!r}" for name in schemas if not COMPONENT_NAME.fullmatch(name)]
    ids: list[str] = []
    for path, item in doc.get("paths", {}).items():
        if not path.startswith("/") or path.startswith("/api"):
            found.append(f"{path}: paths start with / and are relative to the server (/api)")
        for method, op in item.items():
            ids.append(op.get("operationId", ""))
            found += _operation_problems(f"{method.upper()} {path}", method, op, doc)
    if len(ids) != len(set(ids)) or "" in ids:
        found.append("operationIds must be present and unique")
    for scheme in schemes.values():
        if scheme["type"] == "apiKey" and scheme.get("in") not in ("query", "header", "cookie"):
            found.append(f"security scheme {scheme}")
    prefix = REF_TEMPLATE.format(model="")
    refs = _refs(doc)
    found += [f"unresolved $ref {ref}" for ref in refs if ref.removeprefix(prefix) not in schemas]
    unused = set(schemas) - {ref.removeprefix(prefix) for ref in refs}
    if unused:
        found.append(f"components nothing refers to: {sorted(unused)}")
    if "$defs" in json.dumps(doc):
        found.append("a $defs was left in (its references do not resolve in components)")
    return found


def _operation_problems(where: str, method: str, op: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    if method not in METHODS:
        return [f"{where}: not a method"]
    found: list[str] = []
    if not op.get("responses"):
        found.append(f"{where}: no responses")
    if not set(op.get("tags", [])) <= {t["name"] for t in doc.get("tags", [])}:
        found.append(f"{where}: undeclared tag")
    params = [(p["name"], p["in"]) for p in op.get("parameters", [])]
    if len(params) != len(set(params)):
        found.append(f"{where}: duplicate parameters")
    for p in op.get("parameters", []):
        if p["in"] not in ("query", "path", "header", "cookie") or "schema" not in p:
            found.append(f"{where}: parameter {p['name']}")
    schemes = set(doc.get("components", {}).get("securitySchemes", {}))
    found += [f"{where}: undefined scheme in {r}" for r in op.get("security", []) if not set(r) <= schemes]
    for status, response in op.get("responses", {}).items():
        if not re.fullmatch(r"[1-5]\d\d", status):
            found.append(f"{where}: response key {status!r}")
        if not response.get("description"):
            found.append(f"{where} {status}: no description")
        found += [f"{where} {status} {media}: no schema" for media, c in response.get("content", {}).items()
                  if "schema" not in c]  # fmt: skip
    return found


def test_the_document_holds_together(doc: dict[str, Any]) -> None:
    assert structural_problems(doc) == []


def test_the_structural_checks_catch_mistakes(doc: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(doc))
    op = broken["paths"]["/secrets"]["post"]
    op["responses"]["200"] = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/No"}}}
    }
    broken["paths"]["/secrets"]["get"]["operationId"] = "secrets_onboard"
    problems = structural_problems(broken)
    assert any("unresolved $ref" in p for p in problems)
    assert any("no description" in p for p in problems)
    assert any("operationIds" in p for p in problems)

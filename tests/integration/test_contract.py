"""The OpenAPI document is the contract. schemathesis (pinned in requirements-dev.txt) generates requests
from ``GET /api/openapi.json`` and sends them to the dev host (on Azurite and the Key Vault emulator) as
callers with each set of roles, and as nobody: no server error, no answer outside its documented status,
media type, headers and schema, no valid data refused (``contract_checks.valid_data_is_accepted``) and no
invalid data accepted (``negative_data_rejection``).

Bounded so ``make test`` affords it: ``CONTRACT_EXAMPLES`` examples per operation and phase (default 5),
seed ``CONTRACT_SEED`` (default 1). A longer run, by hand (docs/api.md):

    CONTRACT_EXAMPLES=200 CONTRACT_SEED=$RANDOM .venv/bin/python -m pytest tests/integration/test_contract.py

Not checked: ``unsupported_method`` (the Functions host answers 404, not 405, to a method a route does not
take: azure-functions-host#10098, and the dev host does the same), and the checks that need resources
schemathesis would have to create and link (``use_after_free``, ``ensure_resource_availability``,
``object_level_authorization``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from shared.domain.identity import Role, encode_principal
from tests.integration.app_stack import Stack

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "5"))
SEED = int(os.environ.get("CONTRACT_SEED", "1"))
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,negative_data_rejection,missing_required_header,valid_data_is_accepted"
)
#: Who calls: nobody, and callers with each set of roles a person or an application holds.
CALLERS: dict[str, list[Role] | None] = {
    "anonymous": None,
    "every role": list(Role),
    "operator": [Role.ROTATION_OPERATE],
    "auditor": [Role.AUDIT_READ, Role.AUDIT_REVIEW, Role.AUDIT_INCIDENT],
    "revocations": [
        Role.REVOCATION_REQUEST,
        Role.REVOCATION_APPROVE,
        Role.REVOCATION_EXECUTE,
        Role.BREAK_GLASS,
    ],
}


def _run(
    stack: Stack, name: str, roles: list[Role] | None, reports: Path
) -> subprocess.CompletedProcess[str]:
    argv = [
        str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{stack.host.url}/api/openapi.json",
        "--checks", CHECKS,
        "--phases", "coverage,fuzzing", "--max-examples", str(EXAMPLES), "--seed", str(SEED),
        "--workers", "1", "--no-color", "--report", "junit", "--report-dir", str(reports / name),
        "--request-timeout", "30",
    ]  # fmt: skip
    if roles is not None:
        principal = encode_principal(f"oid-contract-{len(roles)}", [r.value for r in roles], name="contract")
        argv += ["--header", f"x-ms-client-principal: {principal}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.contract_checks", "PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_every_answer_keeps_the_documented_contract(stack: Stack, tmp_path: Path) -> None:
    failed = []
    for name, roles in CALLERS.items():
        done = _run(stack, name, roles, tmp_path)
        summary = done.stdout[done.stdout.rfind("SUMMARY") :] if "SUMMARY" in done.stdout else done.stdout
        if done.returncode != 0:
            failed.append(
                f"--- as {name} (exit {done.returncode}) ---\n{done.stdout[-12000:]}\n{done.stderr[-2000:]}"
            )
        else:
            assert "generated" in summary, f"as {name}: schemathesis ran no case\n{done.stdout[-2000:]}"
    assert not failed, "\n".join(failed)

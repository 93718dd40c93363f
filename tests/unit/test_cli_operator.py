"""The operator CLI's own rules, without a service: where it connects and as whom (a dev principal only to
a loopback stack, a token only over https), its exit codes, its paging, what ``tail --follow`` prints
once, what a terminal is shown, and that pyproject's console script and page sizes match the service."""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import time
import tomllib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from lifecycle_cli import audit as audit_commands
from lifecycle_cli import main as cli_main
from lifecycle_cli.client import ServiceClient, ServiceError
from lifecycle_cli.connection import (
    DEFAULT_URL,
    FUNCTION_KEY_HEADER,
    PRINCIPAL_HEADER,
    Options,
    SignInError,
    Target,
    UsageError,
    parse_roles,
    resolve,
)
from lifecycle_cli.context import Context, Exit
from lifecycle_cli.output import Output, clean
from lifecycle_cli.revocations import REVOCATIONS_PAGE
from lifecycle_cli.secrets import SECRETS_PAGE, within
from shared.domain.identity import Role, parse_principal

REPO = Path(__file__).resolve().parents[2]
CLIENT_ID = "3f2c9a4e-8b1d-4c6a-9e7f-0a1b2c3d4e5f"


class FakeCredential:
    """A TokenCredential that hands out numbered tokens expiring ``lifetime`` seconds from now."""

    def __init__(self, lifetime: float = 3600, error: Exception | None = None) -> None:
        self.lifetime, self.error = lifetime, error
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if self.error is not None:
            raise self.error
        self.scopes.append(scopes)
        return AccessToken(f"token-{len(self.scopes)}", int(time.time() + self.lifetime))


# --- where and who --------------------------------------------------------------------------------------


def test_the_url_comes_from_the_option_then_the_environment_then_the_settings_then_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no local.settings.json here
    assert resolve(Options(), {}).url == DEFAULT_URL
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {}, "Host": {"LocalHttpPort": 7190}}))
    assert resolve(Options(), {}).url == "http://127.0.0.1:7190"  # the working directory's
    env = {"SECRET_LIFECYCLE_URL": "http://127.0.0.1:7201/"}
    assert resolve(Options(), env).url == "http://127.0.0.1:7201"
    assert resolve(Options(url="http://localhost:7300"), env).url == "http://localhost:7300"


def test_a_named_settings_file_must_say_the_port(tmp_path: Path) -> None:
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"Values": {}}))
    with pytest.raises(UsageError, match="LocalHttpPort"):
        resolve(Options(settings=settings), {})
    settings.write_text(json.dumps({"Values": {}, "Host": {"LocalHttpPort": "7071"}}))
    with pytest.raises(UsageError, match="port number"):
        resolve(Options(settings=settings), {})
    with pytest.raises(UsageError, match="not a readable"):
        resolve(Options(settings=tmp_path / "missing.json"), {})


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1", "http://127.0.0.1:7071/api", "http://user:pw@127.0.0.1", "http://127.0.0.1?x=1",
     "http://127.0.0.1:99999", "127.0.0.1:7071"],
)  # fmt: skip
def test_a_url_that_is_not_an_apps_root_is_refused(url: str) -> None:
    with pytest.raises(UsageError):
        resolve(Options(url=url), {})


def test_locally_the_caller_is_a_dev_principal_with_every_role_unless_told() -> None:
    target = resolve(Options(url="http://127.0.0.1:7071"), {})
    principal = parse_principal(target.headers()[PRINCIPAL_HEADER])
    assert principal.id == "local-operator" and set(principal.roles) == {r.value for r in Role}
    assert "Authorization" not in target.headers()
    named = resolve(Options(url="http://[::1]:7071", as_="bob", roles=("Secrets.Audit.Read",)), {})
    principal = parse_principal(named.headers()[PRINCIPAL_HEADER])
    assert principal.id == "bob" and list(principal.roles) == ["Secrets.Audit.Read"]
    with pytest.raises(UsageError, match="unknown role"):
        parse_roles("Secrets.Audit.Read,Secrets.Everything")


def test_a_dev_principal_is_never_sent_beyond_this_machine() -> None:
    for url in ("https://fleetsec-func.azurewebsites.net", "http://10.0.0.4:7071", "http://127.0.0.1.nip.io"):
        with pytest.raises(UsageError, match="not a local stack"):
            resolve(Options(url=url), {})


def test_against_azure_a_token_for_the_registration_and_the_function_key_over_https_only() -> None:
    credential = FakeCredential()
    url = "https://fleetsec-func.azurewebsites.net"
    env = {"SECRET_LIFECYCLE_CLIENT_ID": CLIENT_ID.upper(), "SECRET_LIFECYCLE_FUNCTION_KEY": "fkey"}
    target = resolve(Options(url=url), env, lambda: credential)
    headers = target.headers()
    assert headers["Authorization"] == "Bearer token-1" and headers[FUNCTION_KEY_HEADER] == "fkey"
    assert PRINCIPAL_HEADER not in headers
    assert credential.scopes == [(f"api://{CLIENT_ID}/.default",)]
    target.headers()
    assert len(credential.scopes) == 1  # held until shortly before it expires
    with pytest.raises(UsageError, match="https only"):
        resolve(Options(url="http://fleetsec-func.example.com"), env, lambda: credential)
    with pytest.raises(UsageError, match="https only"):
        resolve(Options(url="http://fleetsec-func.example.com", function_key="k"), {})
    with pytest.raises(UsageError, match="GUID"):
        resolve(Options(url=url, client_id="api://x"), {})
    with pytest.raises(UsageError, match="--as"):
        resolve(Options(url=url, client_id=CLIENT_ID, as_="someone-else"), {})


def test_a_token_about_to_expire_is_fetched_again() -> None:
    credential = FakeCredential(lifetime=120)  # inside the five-minute margin
    target = resolve(Options(url="https://app.example.com", client_id=CLIENT_ID), {}, lambda: credential)
    assert target.headers()["Authorization"] == "Bearer token-1"
    assert target.headers()["Authorization"] == "Bearer token-2"


def test_no_token_is_not_signed_in_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    failing = FakeCredential(error=ClientAuthenticationError("AADSTS65001: consent required"))
    target = resolve(Options(url="https://app.example.com", client_id=CLIENT_ID), {}, lambda: failing)
    with pytest.raises(SignInError, match="az login"):
        target.headers()
    env = {"SECRET_LIFECYCLE_URL": "https://app.example.com", "SECRET_LIFECYCLE_CLIENT_ID": CLIENT_ID}
    stderr = io.StringIO()
    code = cli_main.main(["plan"], env=env, stdout=io.StringIO(), stderr=stderr, credential=lambda: failing)
    assert code == Exit.DENIED and "AADSTS65001" in stderr.getvalue()


def test_a_remote_url_without_a_registration_is_a_usage_error() -> None:
    stderr = io.StringIO()
    code = cli_main.main(
        ["--url", "https://app.example.com", "plan"], env={}, stdout=io.StringIO(), stderr=stderr
    )
    assert code == Exit.USAGE and "--client-id" in stderr.getvalue()


def test_a_service_that_does_not_answer_is_unavailable_exit_3() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens there
    stderr = io.StringIO()
    code = cli_main.main(["--url", f"http://127.0.0.1:{port}", "status", "x"], env={}, stderr=stderr)
    assert code == Exit.UNAVAILABLE and "does not answer" in stderr.getvalue()


def test_arguments_are_checked_before_any_call() -> None:
    for argv in (["status", "bad_name"], ["revocations", "show", "not-an-id"], ["plan", "--within", "400d"],
                 ["rotate", "x", "--vault", "Bad.Vault"], ["revocations", "reject", "0" * 32]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            cli_main.main(argv, env={}, stdout=io.StringIO(), stderr=io.StringIO())
        assert exit_.value.code == 2, argv


# --- the service's answers --------------------------------------------------------------------------------


class FakeResponse:
    def __init__(self, status: int, document: Any) -> None:
        self.status_code = status
        self.content = b"" if document is None else json.dumps(document).encode()

    def json(self) -> Any:
        return json.loads(self.content)


class FakeSession:
    """A requests.Session answering GET /api/audit from ``records`` (newest first, as the service pages
    them) and anything else with ``answer``; it keeps what was asked."""

    def __init__(self, records: list[dict[str, Any]] | None = None, answer: FakeResponse | None = None):
        self.records = records or []
        self.answer = answer
        self.asked: list[dict[str, Any]] = []

    def request(self, method: str, url: str, *, params: dict[str, str], **kwargs: Any) -> FakeResponse:
        self.asked.append({"method": method, "url": url, **params, "headers": kwargs["headers"]})
        if self.answer is not None:
            return self.answer
        since = datetime.fromisoformat(params["since"]) if "since" in params else None
        matching = [r for r in self.records if since is None or datetime.fromisoformat(r["time"]) >= since]
        start = int(params.get("continuation", 0))
        end = start + int(params["limit"])
        page = {"items": matching[start:end], "continuation": str(end) if end < len(matching) else None}
        return FakeResponse(200, page)


def _client(session: FakeSession) -> ServiceClient:
    return ServiceClient(Target("http://127.0.0.1:7071", "test"), session)  # type: ignore[arg-type]


def _records(count: int, start: datetime) -> list[dict[str, Any]]:
    return [
        {"id": f"r{i}", "time": (start + timedelta(seconds=i)).isoformat(), "action": "ROTATED",
         "result": "success", "actor_id": "svc"}
        for i in reversed(range(count))
    ]  # fmt: skip


def test_pages_ask_for_no_more_than_the_limit_leaves_and_keep_the_token_of_the_rest() -> None:
    session = FakeSession(_records(250, datetime(2026, 12, 1, tzinfo=UTC)))
    merged = _client(session).pages("audit", {"action": None}, limit=120, page_size=50)
    assert [len(merged["items"]), merged["continuation"]] == [120, "120"]
    assert [int(a["limit"]) for a in session.asked] == [50, 50, 20]
    everything = _client(FakeSession(session.records)).pages("audit", {}, limit=None, page_size=100)
    assert len(everything["items"]) == 250 and everything["continuation"] is None


def test_a_write_always_says_its_media_type_and_a_name_is_one_path_segment() -> None:
    session = FakeSession(answer=FakeResponse(202, {"rotation_id": "r", "status": "queued", "joined": None}))
    _client(session).call("POST", "secrets/a%2Fb/rotate", body=None)
    assert session.asked[0]["headers"]["Content-Type"] == "application/json"
    from lifecycle_cli.client import segment

    assert segment("../audit") == "..%2Faudit"


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, Exit.USAGE), (401, Exit.DENIED), (403, Exit.DENIED), (404, Exit.REFUSED), (409, Exit.REFUSED),
     (415, Exit.REFUSED), (500, Exit.UNAVAILABLE), (503, Exit.UNAVAILABLE)],
)  # fmt: skip
def test_each_refusal_has_its_exit_code(status: int, code: int) -> None:
    stderr = io.StringIO()
    error = ServiceError(status, {"title": "T", "detail": "why", "changed": status == 500})
    assert cli_main._refused(Output(json_mode=False, stderr=stderr), error) == code
    assert f"{status} T: why" in stderr.getvalue()
    assert ("WAS made" in stderr.getvalue()) == (status == 500)


def test_a_401_without_a_body_is_the_hosts_function_key_check() -> None:
    with pytest.raises(ServiceError, match="function key"):
        _client(FakeSession(answer=FakeResponse(401, None))).call("GET", "audit")


def _tail(session: FakeSession, polls: list[Callable[[], None]], *argv: str) -> list[str]:
    """``audit tail`` over ``session``; each sleep runs the next of ``polls`` (then Ctrl-C)."""
    stdout = io.StringIO()

    def sleep(_: float) -> None:
        if not polls:
            raise KeyboardInterrupt
        polls.pop(0)()

    parser = cli_main.build_parser()
    args = parser.parse_args(["audit", "tail", *argv])
    ctx = Context(_client(session), Output(json_mode=True, stdout=stdout), sleep=sleep)
    assert audit_commands.tail_(ctx, args) == Exit.OK
    return [json.loads(line)["id"] for line in stdout.getvalue().splitlines()]


def test_tail_follow_prints_each_new_record_once_a_late_one_included_and_no_history() -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    session = FakeSession(_records(10, start))  # r0 (oldest) .. r9 (newest)

    def append(id_: str, at: datetime) -> Callable[[], None]:
        return lambda: session.records.insert(0, {"id": id_, "time": at.isoformat(), "action": "X",
                                                  "result": "success", "actor_id": "a"})  # fmt: skip

    printed = _tail(session, [
        append("new1", start + timedelta(seconds=20)),
        append("late", start + timedelta(seconds=15)),  # committed after new1, stamped before it
        lambda: None,
    ], "-n", "3", "--follow")  # fmt: skip
    assert printed == ["r7", "r8", "r9", "new1", "late"]


def test_tail_without_follow_reads_once() -> None:
    session = FakeSession(_records(5, datetime(2026, 12, 1, tzinfo=UTC)))
    assert _tail(session, [], "-n", "2") == ["r3", "r4"]
    assert len(session.asked) == 1


# --- what a terminal is shown -----------------------------------------------------------------------------


def test_control_and_format_characters_are_spelled_out_never_obeyed() -> None:
    assert clean("ok\x1b[2J\x07") == "ok\\x1b[2J\\x07"
    assert clean("a\u202eb\u200bc") == "a\\u202eb\\u200bc"
    assert clean("Zoë 東京 ok") == "Zoë 東京 ok"
    stdout = io.StringIO()
    Output(json_mode=False, stdout=stdout).table(None, ["who"], [["\x1b]0;pwned\x07[bold]x[/bold]"]])
    assert "\x1b" not in stdout.getvalue() and "[bold]x[/bold]" in stdout.getvalue()


def test_within_takes_days_or_weeks() -> None:
    assert [within("7d"), within("2w"), within("30"), within(" 365d ")] == [7, 14, 30, 365]
    for bad in ("0d", "366", "7h", "week"):
        with pytest.raises(argparse.ArgumentTypeError):
            within(bad)


def test_a_span_back_is_a_moment_with_a_zone() -> None:
    moment = datetime.fromisoformat(audit_commands.moment("24h"))
    assert abs(moment - (datetime.now(UTC) - timedelta(hours=24))) < timedelta(seconds=5)
    assert audit_commands.moment("2026-12-01") == "2026-12-01"


# --- in step with the project and the service -------------------------------------------------------------


def test_the_console_script_is_main() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    module, function = project["scripts"]["secret-lifecycle"].split(":")
    assert (module, function) == ("lifecycle_cli.main", "main")
    assert callable(cli_main.main)


def test_the_cli_dependencies_are_pinned_where_the_venv_is_made() -> None:
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (REPO / name).read_text().splitlines():
            if "==" in line and not line.startswith("#"):
                package, version = line.split("==")
                pins[package.split("[")[0].strip().lower()] = version.strip()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        requirement = Requirement(text)
        assert requirement.name.lower() in pins, text
        assert requirement.specifier.contains(pins[requirement.name.lower()]), (text, pins)


def test_page_sizes_are_the_services_maxima() -> None:
    from shared.entrypoints import revocations
    from shared.services import audit, catalog

    assert SECRETS_PAGE == catalog.MAX_PAGE
    assert REVOCATIONS_PAGE == revocations.MAX_PAGE
    assert audit_commands.AUDIT_PAGE == audit.MAX_PAGE
    from shared.entrypoints.http import MAX_ACTOR_ID

    assert audit_commands.MAX_ACTOR_ID == MAX_ACTOR_ID


def test_the_dev_principal_is_easy_auths_format() -> None:
    header = resolve(Options(url=DEFAULT_URL, as_="amy"), {}).headers()[PRINCIPAL_HEADER]
    document = json.loads(base64.b64decode(header))
    assert document["auth_typ"] == "aad" and {"typ": "name", "val": "amy"} in document["claims"]
    assert uuid.UUID(CLIENT_ID)

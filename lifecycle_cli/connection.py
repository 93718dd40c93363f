"""Where the service is, and who the command line is to it.

The URL: ``--url``, else ``SECRET_LIFECYCLE_URL``, else the app's port in ``--settings``
(``local.settings.json``'s ``Host.LocalHttpPort``, which ``make run`` writes), else
``http://127.0.0.1:7071``.

The caller:

- **Against Azure** (``--client-id`` or ``SECRET_LIFECYCLE_CLIENT_ID``: the client id of the app's Entra
  registration, ``azd env get-value AUTH_CLIENT_ID``): a bearer token for ``api://<client id>/.default``
  from azure-identity's DefaultAzureCredential (``az login`` works), which App Service Authentication
  validates; and the function key (``--function-key`` or ``SECRET_LIFECYCLE_FUNCTION_KEY``) in
  ``x-functions-key``. Only over https (a loopback URL excepted): a token or a key sent in clear text is
  anybody's on the way.
- **Locally** (a loopback URL, no client id): a dev principal in ``x-ms-client-principal``, which only a
  local stack trusts (``ALLOW_UNVERIFIED_PRINCIPAL=true``); ``--as`` names who (default
  ``local-operator``), with every role unless ``--roles`` names some. It is never sent anywhere else: in
  Azure the platform alone vouches for that header, and a forged one is refused and recorded.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from shared.config import is_loopback_host
from shared.domain.identity import Role, encode_principal

DEFAULT_URL = "http://127.0.0.1:7071"
DEFAULT_SETTINGS = Path("local.settings.json")
LOCAL_OPERATOR = "local-operator"
PRINCIPAL_HEADER = "x-ms-client-principal"
FUNCTION_KEY_HEADER = "x-functions-key"
ENV_URL = "SECRET_LIFECYCLE_URL"
ENV_CLIENT_ID = "SECRET_LIFECYCLE_CLIENT_ID"
ENV_FUNCTION_KEY = "SECRET_LIFECYCLE_FUNCTION_KEY"
#: A token is fetched again this long before it expires (a ``tail --follow`` outlives one).
TOKEN_MARGIN_SECONDS = 300


class UsageError(ValueError):
    """The options cannot make a connection (exit 2)."""


class SignInError(Exception):
    """No token could be had for the app's registration (exit 4)."""


class TokenCredential(Protocol):
    """azure-core's credential protocol, as far as this module uses it."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class Options:
    """What the command line was told (each None when not given)."""

    url: str | None = None
    settings: Path | None = None
    client_id: str | None = None
    function_key: str | None = None
    as_: str | None = None
    roles: tuple[str, ...] | None = None


@dataclass
class Target:
    """The service's base URL and how to present the caller: ``headers()`` gives the headers of one call
    (a token is fetched when the one held is about to expire)."""

    url: str
    who: str
    fixed: dict[str, str] = field(default_factory=dict)
    token: Callable[[], str] | None = None

    def headers(self) -> dict[str, str]:
        headers = dict(self.fixed)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token()}"
        return headers


def resolve(
    options: Options,
    env: Mapping[str, str] | None = None,
    credential: Callable[[], TokenCredential] | None = None,
) -> Target:
    """The target ``options`` (then ``env``, then the settings file) name. Raises UsageError."""
    env = os.environ if env is None else env
    url = _checked_url(options.url or env.get(ENV_URL) or _settings_url(options.settings) or DEFAULT_URL)
    local = is_loopback_host(urlsplit(url).hostname or "")
    client_id = options.client_id or env.get(ENV_CLIENT_ID) or None
    key = options.function_key or env.get(ENV_FUNCTION_KEY) or None
    if (client_id or key) and urlsplit(url).scheme != "https" and not local:
        raise UsageError(f"{url}: a token or a function key goes over https only")
    fixed = {FUNCTION_KEY_HEADER: key} if key else {}
    if client_id:
        if options.as_ is not None or options.roles is not None:
            raise UsageError("--as and --roles are for a local stack; against Azure the token says who")
        scope = f"api://{_checked_client_id(client_id)}/.default"
        make = credential or _default_credential
        return Target(url, f"token for {scope}", fixed, _TokenCache(make, scope).get)
    if not local:
        raise UsageError(
            f"{url} is not a local stack: give --client-id (the app's Entra registration, "
            f"`azd env get-value AUTH_CLIENT_ID`) or {ENV_CLIENT_ID}, and sign in with `az login`"
        )
    who = options.as_ if options.as_ is not None else LOCAL_OPERATOR
    if not who.strip() or len(who) > 128:
        raise UsageError("--as must be 1-128 characters")
    roles = list(options.roles) if options.roles is not None else [role.value for role in Role]
    fixed[PRINCIPAL_HEADER] = encode_principal(who, roles, name=who)
    return Target(url, f"dev principal {who!r} ({', '.join(roles) or 'no role'})", fixed)


def parse_roles(text: str) -> tuple[str, ...]:
    """``--roles``: comma-separated role names, each one of the service's. Raises UsageError."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    known = {role.value for role in Role}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UsageError(f"--roles: unknown role(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return names


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"the service URL must be http(s)://host[:port], not {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise UsageError(f"the service URL is the app's root (http(s)://host[:port]), not {url!r}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        raise UsageError(f"the service URL has a bad port: {url!r}") from None
    return url.rstrip("/")


def _checked_client_id(client_id: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(client_id))
    except ValueError:
        raise UsageError(
            f"--client-id must be the registration's client id (a GUID), not {client_id!r}"
        ) from None


def _settings_url(path: Path | None) -> str | None:
    """``http://127.0.0.1:<Host.LocalHttpPort>`` of a local.settings.json (``path``, else the one in the
    working directory when there is one). Raises UsageError when a file named by ``--settings`` is not one."""
    named = path is not None
    path = path or DEFAULT_SETTINGS
    if not named and not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: not a readable local.settings.json ({err})") from None
    host = document.get("Host") if isinstance(document, dict) else None
    port = host.get("LocalHttpPort") if isinstance(host, dict) else None
    if port is None:
        if named:
            raise UsageError(f"{path} has no Host.LocalHttpPort: is `make run` running with it?")
        return None
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise UsageError(f"{path}: Host.LocalHttpPort must be a port number, not {port!r}")
    return f"http://127.0.0.1:{port}"


def _default_credential() -> TokenCredential:
    from azure.identity import DefaultAzureCredential

    # Never a browser window from a terminal tool: az login, azd auth login, the environment, a managed
    # identity (a runbook), or the Visual Studio Code and Azure PowerShell sign-ins.
    credential: TokenCredential = DefaultAzureCredential(exclude_interactive_browser_credential=True)
    return credential


class _TokenCache:
    """One credential, built on first use, and its token until shortly before it expires."""

    def __init__(self, make: Callable[[], TokenCredential], scope: str) -> None:
        self._make, self._scope = make, scope
        self._credential: TokenCredential | None = None
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:
            if self._token is None or self._token[1] - TOKEN_MARGIN_SECONDS < time.time():
                self._token = self._fetch()
            return self._token[0]

    def _fetch(self) -> tuple[str, float]:
        from azure.core.exceptions import ClientAuthenticationError

        try:
            if self._credential is None:
                self._credential = self._make()
            token = self._credential.get_token(self._scope)
        except ClientAuthenticationError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SignInError(
                f"no token for {self._scope}: {first[:300]} (sign in with `az login`; the registration "
                "must pre-authorize the Azure CLI, as `python -m deploy.entra ensure` sets it up)"
            ) from None
        return str(token.token), float(token.expires_on)

"""What every command gets (the client, the output, the clock), the exit codes, and the checks of the
arguments every area shares (a secret's name, a request's id, a vault, a count)."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from lifecycle_cli.client import ServiceClient
from lifecycle_cli.output import Output
from shared.domain.secrets import NAME_PATTERN, VAULT_PATTERN, VERSION_PATTERN


class Exit(IntEnum):
    """The exit codes (docs/cli.md)."""

    OK = 0
    #: It ran, and the answer is bad news: verify found breaks, a rotation waited for failed or timed out.
    TROUBLE = 1
    #: Bad arguments, or arguments the service refused (400).
    USAGE = 2
    #: The service did not answer, or failed (5xx; a 503 changed nothing: try again).
    UNAVAILABLE = 3
    #: Not signed in, no function key, or the caller lacks the role (401, 403).
    DENIED = 4
    #: The state does not allow it: not found (404), a conflict (409), a media type refused (415).
    REFUSED = 5


@dataclass
class Context:
    client: ServiceClient
    out: Output
    sleep: Callable[[float], None] = field(default=time.sleep)
    clock: Callable[[], float] = field(default=time.monotonic)


Command = Callable[[Context, argparse.Namespace], int]
REVOCATION_ID = re.compile(r"[0-9a-f]{32}")


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    """An argument type: text ``pattern`` matches whole, else a usage error saying it is not ``what``."""

    def check(text: str) -> str:
        if not pattern.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return text

    return check


secret_name = _matching(NAME_PATTERN, "a secret name (1-127 of 0-9, a-z, A-Z and -)")
revocation_id = _matching(REVOCATION_ID, "a revocation id (32 hex digits)")
vault = _matching(VAULT_PATTERN, "a vault's short name (e.g. fleet-eu)")
version = _matching(VERSION_PATTERN, "a version id")


def listing(
    ctx: Context, path: str, params: Mapping[str, Any], *, limit: int | None, page_size: int, what: str
) -> dict[str, Any]:
    """Every page of the listing at ``path`` (at most ``limit`` items), with a spinner counting them."""
    with ctx.out.progress(f"reading {what}") as update:
        return ctx.client.pages(
            path, params, limit=limit, page_size=page_size, progress=lambda n: update(f"reading {what}: {n}")
        )


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def text_of(limit: int) -> Callable[[str], str]:
    """A free text argument: not blank, at most ``limit`` characters (the service's bound)."""

    def check(value: str) -> str:
        if not value.strip() or len(value) > limit:
            raise argparse.ArgumentTypeError(f"must be 1-{limit} characters")
        return value

    return check


def vault_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--vault", type=vault, help=f"the vault's short name ({what})")


def short(version_id: Any) -> str:
    """A version id as a table shows it (the first 12 hex digits; the JSON has it whole)."""
    return version_id[:12] if isinstance(version_id, str) else ""

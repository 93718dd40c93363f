"""What every command gets (the client, the output, the clock), the exit codes, and the checks of the
arguments every area shares (a secret's name, a request's id, a vault, a count)."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
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


def secret_name(text: str) -> str:
    if not NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a secret name (1-127 of 0-9, a-z, A-Z and -)")
    return text


def revocation_id(text: str) -> str:
    if not REVOCATION_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a revocation id (32 hex digits)")
    return text


def vault(text: str) -> str:
    if not VAULT_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a vault's short name (e.g. fleet-eu)")
    return text


def version(text: str) -> str:
    if not VERSION_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a version id")
    return text


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

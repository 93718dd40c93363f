"""New secret values, one generator per ``secret-kind``, from the OS CSPRNG (``secrets``).

Each returns the value and the content type Key Vault stores with it. The randomness source is a
parameter only so tests can check the shapes; production always uses ``secrets.token_bytes``.
"""

from __future__ import annotations

import base64
import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.domain.policy import SecretKind

RandomBytes = Callable[[int], bytes]

API_KEY_PREFIX = "sk_"
#: Characters a database password may use: none that breaks a connection string, a URL or a shell
#: (no quote, backslash, space, ``@ : / ? # % & = ; + , $ ` ' "``).
PASSWORD_SYMBOLS = "!*-_.~^()[]{}<>|"
PASSWORD_CLASSES = (string.ascii_uppercase, string.ascii_lowercase, string.digits, PASSWORD_SYMBOLS)
DEFAULT_PASSWORD_LENGTH = 32


@dataclass(frozen=True)
class NewValue:
    value: str = field(repr=False)
    content_type: str


def generate(kind: SecretKind, *, random_bytes: RandomBytes = secrets.token_bytes) -> NewValue:
    """A fresh value for a secret of this kind."""
    if kind == SecretKind.API_KEY:
        # A short prefix (recognisable in logs and by secret scanners) + 256 random bits, URL-safe.
        return NewValue(API_KEY_PREFIX + _b64url(random_bytes(32)), "text/plain")
    if kind == SecretKind.DATABASE_PASSWORD:
        return NewValue(password(DEFAULT_PASSWORD_LENGTH, random_bytes=random_bytes), "text/plain")
    if kind == SecretKind.JWT_SIGNING_KEY:
        # HS512 material: 512 bits (HS256 needs at least 256), base64url as JWK "k" values are.
        return NewValue(_b64url(random_bytes(64)), "application/octet-stream; encoding=base64url")
    # AES-256 key material, base64.
    return NewValue(base64.b64encode(random_bytes(32)).decode(), "application/octet-stream; encoding=base64")


def password(length: int, *, random_bytes: RandomBytes = secrets.token_bytes) -> str:
    """A password of ``length`` characters with at least one of each class, uniformly drawn (rejection
    sampling, no modulo bias). Raises ValueError below 12 characters."""
    if length < 12:
        raise ValueError("a database password has at least 12 characters")
    alphabet = "".join(PASSWORD_CLASSES)
    while True:
        chosen = [alphabet[_below(len(alphabet), random_bytes)] for _ in range(length)]
        if all(any(c in cls for c in chosen) for cls in PASSWORD_CLASSES):
            return "".join(chosen)


def _below(n: int, random_bytes: RandomBytes) -> int:
    """A uniform integer in [0, n) for n <= 256."""
    limit = 256 - 256 % n
    while True:
        byte = random_bytes(1)[0]
        if byte < limit:
            return byte % n


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")

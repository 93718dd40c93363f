"""Generated values: the shape each kind promises, enough entropy, nothing that breaks a connection string."""

from __future__ import annotations

import base64
from collections import Counter
from itertools import cycle

import pytest

from shared.domain.generators import PASSWORD_SYMBOLS, generate, password
from shared.domain.policy import SecretKind


def test_api_key() -> None:
    new = generate(SecretKind.API_KEY)
    assert new.value.startswith("sk_") and len(new.value) == 3 + 43
    assert set(new.value[3:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert new.value not in repr(new)


def test_jwt_and_encryption_keys_carry_their_bits() -> None:
    jwt = generate(SecretKind.JWT_SIGNING_KEY)
    assert len(base64.urlsafe_b64decode(jwt.value + "==")) == 64
    aes = generate(SecretKind.ENCRYPTION_KEY)
    assert len(base64.b64decode(aes.value)) == 32
    assert {jwt.content_type, aes.content_type} == {
        "application/octet-stream; encoding=base64url",
        "application/octet-stream; encoding=base64",
    }


def test_every_value_is_new() -> None:
    for kind in SecretKind:
        assert len({generate(kind).value for _ in range(50)}) == 50


def test_passwords_have_every_class_and_nothing_that_breaks_a_connection_string() -> None:
    for _ in range(200):
        value = generate(SecretKind.DATABASE_PASSWORD).value
        assert len(value) == 32
        assert any(c.isupper() for c in value) and any(c.islower() for c in value)
        assert any(c.isdigit() for c in value) and any(c in PASSWORD_SYMBOLS for c in value)
        assert not set(value) & set("\\'\" @:/?#%&=;+,$`")


def test_password_characters_are_drawn_without_bias() -> None:
    counts = Counter("".join(password(64) for _ in range(400)))
    alphabet_size = 26 + 26 + 10 + len(PASSWORD_SYMBOLS)
    assert len(counts) == alphabet_size
    expected = 64 * 400 / alphabet_size
    assert all(0.7 * expected < n < 1.3 * expected for n in counts.values()), counts


def test_rejection_sampling_skips_bytes_that_would_bias() -> None:
    """Bytes at or above the largest multiple of the alphabet size are drawn again, never folded."""
    alphabet_size = 26 + 26 + 10 + len(PASSWORD_SYMBOLS)
    limit = 256 - 256 % alphabet_size
    feed = cycle([limit, 255, 0, 26, 52, 62])  # two biased bytes skipped; then A, a, 0, the first symbol
    value = password(12, random_bytes=lambda n: bytes(next(feed) for _ in range(n)))
    assert value == "Aa0" + PASSWORD_SYMBOLS[0] + "Aa0" + PASSWORD_SYMBOLS[0] + "Aa0" + PASSWORD_SYMBOLS[0]
    with pytest.raises(ValueError):
        password(8)

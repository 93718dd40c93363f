"""The ``webhook`` target rotator: consumers (dispatch apps) that check their own keys are told of a
rotation by signed HTTPS POSTs to their URL (the policy's ``rotation-target``).

The contract (docs/webhook-consumer.md): a JSON body ``{"step", "secret_name", "version", "value"?}``;
``set`` carries the pending value (the consumer accepts old and new from then on), ``test`` asks it to
prove it accepts the new value (and carries it too), ``finish`` (after the grace period, no value) tells it
to keep only the value of rotation ``version``. Each request is signed (``shared.domain.targets.sign``)
with the consumer's own key, the Key Vault secret ``signing_key_name(secret name)``, made by ``bind`` (the
API's onboarding and policy change), never by a step. ``bind`` binds the key's version to this secret and
the consumer's canonical URL with a MAC (``binding_mac``, the audit key), and every step checks it before
anything is sent: a ``rotation-target`` changed by tag alone — to another secret's consumer, say — is
``TargetNotBound`` and receives nothing.

The value travels only in the body of a TLS request to the consumer: never in a URL, a header, a log line
or an exception message. Redirects are never followed (one could carry the value elsewhere).

Errors: ``TargetRefused`` when retrying cannot help (a URL that is not https or carries credentials, a
signing key meant for another consumer or disabled, a consumer that answered 3xx or 4xx other than 429);
``DependencyUnavailable("webhook", ...)`` when the consumer did not answer, or answered 5xx or 429, after
the retries. Errors of the secret store (Forbidden, DependencyUnavailable) pass through.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from shared.domain.errors import Conflict, DependencyUnavailable, DomainError, NotFound, SecretDisabled
from shared.domain.secrets import SecretValue
from shared.domain.targets import (
    BINDING_KEY_TAG,
    BINDING_TAG,
    SIGNATURE_HEADER,
    SIGNING_KEY_TAG,
    SIGNS_FOR_SECRET_TAG,
    SIGNS_FOR_TAG,
    TIMESTAMP_HEADER,
    TargetNotBound,
    TargetRefused,
    TargetSecret,
    binding_mac,
    canonical_url,
    sign,
    signing_key_name,
)
from shared.ports import MacKeyRing, SecretStore

logger = logging.getLogger(__name__)

DEPENDENCY = "webhook"
SIGNING_KEY_CONTENT_TYPE = "text/plain"
USER_AGENT = "secret-lifecycle-webhook/1"
#: The longest ``Retry-After`` (seconds) honoured on a 429 or 503: the function has a timeout too.
MAX_RETRY_AFTER = 30.0
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


@dataclass(frozen=True)
class _Post:
    """One POST to a consumer, as every attempt sends it (each attempt signs it afresh)."""

    step: str
    secret: TargetSecret
    target: str
    host: str
    body: bytes
    key: bytes
    proxies: dict[str, str]
    verify: bool | str


class WebhookRotator:
    """``shared.ports.TargetRotator`` for consumers reached at an https URL.

    ``allow_loopback_http``: accept ``http://`` to a loopback host (development only); ``ca_bundle``: a PEM
    file of the CAs to trust instead of the system's; ``timeout``: seconds to connect and, separately, to
    wait for the answer; ``attempts``: tries per step (5xx, 429, no answer), waiting ``backoff`` seconds,
    then twice as long, and so on, in between; ``now``/``sleep``: the clock the signatures are stamped
    with and the wait, for tests.
    """

    def __init__(  # noqa: PLR0913 - its peers, then the HTTP knobs tests and settings turn, by keyword
        self,
        store: SecretStore,
        keys: MacKeyRing,
        *,
        allow_loopback_http: bool = False,
        ca_bundle: str | None = None,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 0.5,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._store = store
        self._keys = keys
        self._allow_loopback_http = allow_loopback_http
        self._verify: str | bool = ca_bundle if ca_bundle is not None else True
        self._timeout = timeout
        self._attempts = attempts
        self._backoff = backoff
        self._now = now
        self._sleep = sleep

    def pending(self, secret: TargetSecret, generated: str) -> str:
        """The generated value as it is: a consumer's key is an opaque string. Raises nothing."""
        return generated

    def tags(self, secret: TargetSecret) -> dict[str, str]:
        """``{webhook-signing-key: <the signing key's secret name>}``. Reads and writes nothing."""
        return {SIGNING_KEY_TAG: signing_key_name(secret.name)}

    def bind(self, secret: TargetSecret) -> dict[str, str]:
        """Make the consumer at the secret's target the one consumer of this secret (the API's onboarding
        and policy change only): the signing key's current version when it is bound to this secret and
        this URL already, else a new version — a new key, bound to them — with the older ones disabled.
        Returns ``tags``. Raises TargetRefused (a URL this rotator refuses; the key's name deleted but
        recoverable) and the store's errors."""
        target = canonical_url(self._target("bind", secret))
        name = signing_key_name(secret.name)
        try:
            if self._bound(self._store.get_value(name), secret.name, target):
                return self.tags(secret)
        except (NotFound, SecretDisabled):
            pass
        key_id, mac_key = self._keys.current()
        tags = {SIGNS_FOR_TAG: target[:256], SIGNS_FOR_SECRET_TAG: secret.name.lower()}
        try:
            made = self._store.set_value(
                name, secrets.token_urlsafe(48), content_type=SIGNING_KEY_CONTENT_TYPE, tags=tags
            )
        except Conflict:
            raise TargetRefused(
                "bind", f"the signing key {name} cannot be made (deleted but recoverable?)"
            ) from None
        binding = binding_mac(mac_key, secret.name, target, made.version)
        self._store.update_properties(
            name, made.version, tags={**tags, BINDING_TAG: binding, BINDING_KEY_TAG: key_id}
        )
        logger.info(
            "webhook signing key %s bound to %s's consumer (version %s)", name, secret.name, made.version
        )
        for older in self._store.list_versions(name):
            if older.enabled and older.version != made.version:
                try:
                    self._store.update_properties(name, older.version, enabled=False)
                except DomainError:  # unbound anyway: never used to sign again
                    logger.warning("signing key %s version %s could not be disabled", name, older.version)
        return self.tags(secret)

    def set(self, secret: TargetSecret, pending: str) -> None:
        """Send ``set`` with the pending value: the consumer accepts old and new from now on.
        Raises TargetRefused, DependencyUnavailable (see the module)."""
        self._post("set", secret, pending)

    def test(self, secret: TargetSecret, pending: str) -> None:
        """Send ``test`` with the pending value: a 2xx answer proves the consumer accepts it.
        Raises TargetRefused, DependencyUnavailable (see the module)."""
        self._post("test", secret, pending)

    def finish(self, secret: TargetSecret, retired: str) -> None:
        """Send ``finish`` (no value) naming the rotation of the current value: the consumer drops every
        other one, ``retired`` included. Does nothing when the current value was not made by a rotation
        (``secret.rotation_id`` is None). Raises TargetRefused, DependencyUnavailable (see the module)."""
        if secret.rotation_id is None:
            logger.info(
                "webhook finish for %s skipped: its current version was not made by a rotation", secret.name
            )
            return
        self._post("finish", secret, None)

    def _post(self, step: str, secret: TargetSecret, value: str | None) -> None:
        target = self._target(step, secret)
        if secret.rotation_id is None:
            raise TargetRefused(step, "the rotation has no id")
        key = self._signing_key(step, secret, target)
        document: dict[str, str] = {"step": step, "secret_name": secret.name, "version": secret.rotation_id}
        if value is not None:
            document["value"] = value
        body = json.dumps(document, separators=(",", ":")).encode()
        parts = urlsplit(target)
        # A loopback consumer is on this machine: an environment proxy could not reach it. Otherwise the
        # environment's proxy for this URL (HTTPS_PROXY, NO_PROXY), as requests would find it.
        proxies = {} if _is_loopback(parts.hostname) else requests.utils.get_environ_proxies(target)
        verify = self._verify
        if verify is True:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        post = _Post(step, secret, target, parts.netloc, body, key, proxies, verify)
        with requests.Session() as session:
            # Nothing else from the environment: requests would send the credentials ~/.netrc holds for
            # the consumer's host to the consumer, as basic auth.
            session.trust_env = False
            for attempt in range(1, self._attempts + 1):
                answer = self._send(session, post, attempt)
                if answer is not None and self._accepted(post, *answer, attempt):
                    return

    def _send(self, session: requests.Session, post: _Post, attempt: int) -> tuple[int, str | None] | None:
        """One attempt: the status and Retry-After of the answer, or None when none came (after the wait
        before the next attempt). Raises DependencyUnavailable when the last attempt got no answer."""
        timestamp = int(self._now())  # signed per attempt: a retry is not a stale request
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(post.key, timestamp, post.body),
            TIMESTAMP_HEADER: str(timestamp),
        }
        try:
            response = session.post(
                post.target,
                data=post.body,
                headers=headers,
                timeout=(self._timeout, self._timeout),
                allow_redirects=False,
                verify=post.verify,
                proxies=post.proxies,
                stream=True,  # the answer's body is never read: only its status counts
            )
        except (requests.ConnectionError, requests.Timeout) as err:
            # SSLError is a ConnectionError: a handshake cut short is as transient as a refused
            # connection, and an operator needs to tell an untrusted certificate from silence.
            tls = isinstance(err, requests.exceptions.SSLError)
            logger.warning(
                "webhook %s for %s: %s did not answer (attempt %s of %s, %s)",
                post.step, post.secret.name, post.host, attempt, self._attempts, type(err).__name__,
            )  # fmt: skip
            if attempt == self._attempts:
                detail = f"{post.host} failed the TLS handshake" if tls else f"{post.host} did not answer"
                raise DependencyUnavailable(DEPENDENCY, detail) from err
            self._sleep(self._delay(attempt, None))
            return None
        except requests.RequestException as err:
            raise DependencyUnavailable(DEPENDENCY, f"{post.host}: {type(err).__name__}") from err
        retry_after = response.headers.get("Retry-After")
        response.close()
        return response.status_code, retry_after

    def _accepted(self, post: _Post, status: int, retry_after: str | None, attempt: int) -> bool:
        """Whether the consumer took it (2xx); False after the wait before the next attempt (429, 5xx).
        Raises TargetRefused for any other answer, DependencyUnavailable after the last attempt."""
        step, name, host = post.step, post.secret.name, post.host
        if 200 <= status < 300:
            rotation_id = post.secret.rotation_id
            logger.info(
                "webhook %s for %s (rotation %s): %s answered %s", step, name, rotation_id, host, status
            )
            return True
        if status != 429 and status < 500:
            logger.warning("webhook %s for %s: %s answered %s", step, name, host, status)
            raise TargetRefused(step, f"the consumer answered {status}")
        logger.warning(
            "webhook %s for %s: %s answered %s (attempt %s of %s)",
            step,
            name,
            host,
            status,
            attempt,
            self._attempts,
        )
        if attempt == self._attempts:
            raise DependencyUnavailable(DEPENDENCY, f"{host} answered {status}")
        self._sleep(self._delay(attempt, retry_after))
        return False

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = self._backoff * 2.0 ** (attempt - 1)
        if retry_after is not None and retry_after.strip().isdigit():
            delay = max(delay, min(float(retry_after.strip()), MAX_RETRY_AFTER))
        return delay

    def _target(self, step: str, secret: TargetSecret) -> str:
        """The consumer's URL, checked: https (or http to a loopback host when allowed), a host, no
        credentials."""
        target = (secret.target or "").strip()
        if not target:
            raise TargetRefused(step, "the secret has no rotation-target")
        try:
            parts = urlsplit(target)
            parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
        except ValueError:
            raise TargetRefused(step, "the rotation-target is not a URL") from None
        if parts.username is not None or parts.password is not None:
            raise TargetRefused(step, "the rotation-target must not carry credentials")
        if not parts.hostname:
            raise TargetRefused(step, "the rotation-target has no host")
        scheme = parts.scheme.lower()
        if scheme == "http" and self._allow_loopback_http and _is_loopback(parts.hostname):
            return target
        if scheme != "https":
            raise TargetRefused(step, "the rotation-target must be an https URL")
        return target

    def _signing_key(self, step: str, secret: TargetSecret, target: str) -> bytes:
        """The signing key of ``secret``'s consumer, when its current version is bound to this secret and
        this URL (``bind``). Raises TargetNotBound (no key, a key bound elsewhere or not bound at all: a
        target changed by tag alone), TargetRefused (disabled, empty)."""
        name = signing_key_name(secret.name)
        try:
            stored = self._store.get_value(name)
        except SecretDisabled:
            raise TargetRefused(step, f"the signing key {name} is disabled") from None
        except NotFound:
            how = "give the secret its webhook policy through PUT /api/secrets/{name}/policy"
            raise TargetNotBound(step, f"no signing key {name}: {how}") from None
        if not self._bound(stored, secret.name, target):
            raise TargetNotBound(step, f"the signing key {name} is not bound to this URL")
        if not stored.value:
            raise TargetRefused(step, f"the signing key {name} is empty")
        return stored.value.encode("utf-8")

    def _bound(self, stored: SecretValue, secret_name: str, target: str) -> bool:
        """Whether a signing key version carries the binding to ``secret_name`` and ``target``."""
        tags = stored.properties.tags
        mac_key = self._keys.get(tags.get(BINDING_KEY_TAG, ""))  # None for no id, or one it never made
        if mac_key is None or not stored.properties.enabled:
            return False
        try:
            expected = binding_mac(mac_key, secret_name, target, stored.properties.version)
        except ValueError:
            return False
        return hmac.compare_digest(tags.get(BINDING_TAG, "").encode(), expected.encode())


def _is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 or localhost."""
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Several vaults, one service: each managed vault has its own namespace of stored state.

The service keeps its state (rotation progress and leases, retirement schedules, revocation requests,
event claims, the inventory) by secret name, and two vaults may hold secrets of one name. The designated
vault (the one holding the audit key and the digest anchor) keeps the partitions it always had; every other
vault's partitions are prefixed with its name (``<vault>:rotation``). The prefix sits above the sealed store,
so a row's seal covers the partition it was written to: a row copied from one vault's namespace into
another's fails its seal (``StateTampered``), and no decision about one vault's secret rests on another's.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from shared.domain.state import StateWrite, Versioned
from shared.ports import StateStore

logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


def scoped_partition(vault: str | None, partition: str) -> str:
    """The stored partition of ``partition`` in ``vault``'s namespace (None: the designated vault's)."""
    return partition if vault is None else f"{vault}:{partition}"


class ScopedStateStore:
    """A StateStore over ``inner`` (a sealed store) whose partitions are ``vault``'s."""

    def __init__(self, inner: StateStore, vault: str) -> None:
        self._inner = inner
        self.vault = vault

    def _at(self, partition: str) -> str:
        return scoped_partition(self.vault, partition)

    def get(self, partition: str, key: str) -> Versioned | None:
        return self._inner.get(self._at(partition), key)

    def create(self, partition: str, key: str, state: Mapping[str, Any]) -> Versioned:
        return self._inner.create(self._at(partition), key, state)

    def replace(self, partition: str, key: str, state: Mapping[str, Any], etag: str) -> Versioned:
        return self._inner.replace(self._at(partition), key, state, etag)

    def delete(self, partition: str, key: str, etag: str) -> None:
        self._inner.delete(self._at(partition), key, etag)

    def commit(self, partition: str, writes: Sequence[StateWrite]) -> list[Versioned]:
        return self._inner.commit(self._at(partition), writes)

    def list(self, partition: str, *, start: str = "", stop: str | None = None) -> dict[str, Versioned]:
        return self._inner.list(self._at(partition), start=start, stop=stop)


class UnknownVault(ValueError):
    """A vault this service does not manage was named: ``vault`` as given (cut), ``known`` the ones it
    manages."""

    def __init__(self, vault: str, known: Sequence[str]) -> None:
        super().__init__(f"not a vault this service manages ({', '.join(known)})")
        self.vault = vault[:64]
        self.known = tuple(known)


def for_each(
    vaults: Mapping[str, T], work: Callable[[T], R], *, parallel: int = 4
) -> tuple[dict[str, R], dict[str, Exception]]:
    """``work`` for each vault (by name), up to ``parallel`` at once — each vault has its own throttle
    budget, so one vault's pace never holds up another's — and one vault's failure never stops the
    others: (results, errors) by vault name, in the order given. The calling thread runs the work when
    there is one vault."""
    results: dict[str, R] = {}
    errors: dict[str, Exception] = {}
    if len(vaults) <= 1 or parallel <= 1:
        for name, peers in vaults.items():
            try:
                results[name] = work(peers)
            except Exception as err:
                errors[name] = err
        return results, errors
    with ThreadPoolExecutor(max_workers=min(parallel, len(vaults)), thread_name_prefix="vault") as pool:
        # Each in a copy of the caller's context (the invocation's trace span, for one): a thread of the
        # pool starts with an empty one.
        futures = {
            name: pool.submit(contextvars.copy_context().run, work, peers) for name, peers in vaults.items()
        }
    for name, future in futures.items():
        error = future.exception()
        if error is None:
            results[name] = future.result()
        elif isinstance(error, Exception):
            errors[name] = error
        else:
            raise error
    return results, errors


def failures(what: str, errors: Mapping[str, Exception]) -> list[str]:
    """The vaults whose ``what`` raised (``for_each``'s errors), each logged with its traceback, as an
    invocation's failure names them: ``<vault>: <error class>: <error>``."""
    for vault, err in errors.items():
        logger.error("%s of the vault %s failed", what, vault, exc_info=err)
    return [f"{vault}: {type(err).__name__}: {err}" for vault, err in errors.items()]

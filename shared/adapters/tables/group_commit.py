"""Group commit of audit appends within one process: callers appending to the same chain at once share
one transaction instead of racing each other for the chain's head.

One of a chain's waiting callers at a time is the leader: it commits what has queued up as one batch,
hands each caller its records, and repeats until its own events are written; then the next waiting
caller leads. Concurrent appends to a hot chain thus cost one ETag round per batch, not one per record.
Different chains commit independently, from their own leaders' threads.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence

from shared.domain.audit import AuditEvent, AuditRecord
from shared.domain.errors import DependencyUnavailable

#: Commits one chain's events as one transaction and returns their records.
Commit = Callable[[str, Sequence[AuditEvent]], list[AuditRecord]]


class ContentRejected(DependencyUnavailable):
    """The store refused the rows themselves (HTTP 400): retrying the same rows cannot help, but the
    other callers batched with them deserve a try on their own."""


class _Pending:
    """One caller's events waiting in a chain's queue, and what became of them."""

    def __init__(self, events: Sequence[AuditEvent]) -> None:
        self.events = events
        self.done = False
        self.records: list[AuditRecord] = []
        self.error: BaseException | None = None

    def finished(self) -> bool:
        """Set by whichever caller led the commit (read again each time: another thread writes it)."""
        return self.done

    def outcome(self) -> list[AuditRecord]:
        if self.error is not None:
            raise self.error
        return self.records


class _ChainQueue:
    """The callers appending to one chain in this process, and whether one of them leads."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: deque[_Pending] = deque()
        self.leading = False


class GroupCommit:
    """Appends to chains through ``commit``, batching concurrent callers of a chain (at most ``limit``
    events a batch; a caller's events never exceed it)."""

    def __init__(self, commit: Commit, limit: int) -> None:
        self._commit_batch = commit
        self._limit = limit
        self._queues: dict[str, _ChainQueue] = {}
        self._queues_lock = threading.Lock()

    def append(self, chain: str, events: Sequence[AuditEvent]) -> list[AuditRecord]:
        """Commit ``events`` (at most ``limit``) to ``chain``, maybe in one transaction with other
        callers'. Raises what ``commit`` raised for the batch that held them."""
        queue = self._queue(chain)
        mine = _Pending(events)
        with queue.cond:
            queue.pending.append(mine)
            while queue.leading and not mine.done:
                queue.cond.wait()
            if mine.done:  # a leader wrote (or failed) it while this caller waited
                return mine.outcome()
            queue.leading = True
        try:
            while not mine.finished():
                self._commit(chain, self._next_batch(queue))
                with queue.cond:
                    queue.cond.notify_all()
        finally:
            with queue.cond:
                queue.leading = False
                queue.cond.notify_all()
        return mine.outcome()

    def _queue(self, chain: str) -> _ChainQueue:
        with self._queues_lock:
            return self._queues.setdefault(chain, _ChainQueue())

    def _next_batch(self, queue: _ChainQueue) -> list[_Pending]:
        """The oldest waiting callers whose events fit one transaction (the first always)."""
        with queue.cond:
            batch = [queue.pending.popleft()]
            size = len(batch[0].events)
            while queue.pending and size + len(queue.pending[0].events) <= self._limit:
                size += len(queue.pending[0].events)
                batch.append(queue.pending.popleft())
        return batch

    def _commit(self, chain: str, batch: list[_Pending]) -> None:
        """Write a batch of callers' events as one transaction; mark every caller done, with its records
        or with the error (fail closed: none of them is written then). Never raises."""
        try:
            records = self._commit_batch(chain, [e for p in batch for e in p.events])
        except ContentRejected as err:
            if len(batch) == 1:
                batch[0].error, batch[0].done = err, True
                return
            for alone in batch:  # one caller's bad row must not fail the others
                self._commit(chain, [alone])
            return
        except BaseException as err:
            for pending in batch:
                pending.error, pending.done = err, True
            return
        offset = 0
        for pending in batch:
            pending.records = records[offset : offset + len(pending.events)]
            offset += len(pending.events)
            pending.done = True

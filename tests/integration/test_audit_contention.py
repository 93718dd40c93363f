"""Refusals under load, over real HTTP through the dev host on real peers: every 401 is exactly one
ACCESS_DENIED record, however many clients are refused at once.

All refusals land on ONE chain (``<vault>:_service``), so they all append after the same chain head row.
64 and then 256 clients, released together, send unauthenticated GETs of /api/audit; each request carries
its own user agent, which the record keeps (``actor_user_agent``), so every request is matched to its
record: none may be missing (a record dropped after the adapter's ETag retries), none stored twice.

Each client holds one keep-alive connection, opened before the clients are released, so that what arrives
at once is the requests themselves (a burst of new connections is tested in test_dev_host.py).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shared.adapters.tables import AUDIT_TABLE
from tests.integration.app_stack import Stack

#: (parallel clients, refused requests): 64 x 400 is the load that lost records with one append per
#: refusal; 256 clients send two requests each.
PHASES = ((64, 400), (256, 512))
#: Both phases together, peers' start-up excluded; the test fails rather than run longer.
DEADLINE_S = 150.0
REQUEST_TIMEOUT_S = 60.0
#: Connections opened at once before a phase.
OPENING_AT_ONCE = 16


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def refuse(
    base: str, agents: list[str], opening: threading.Semaphore, start: threading.Barrier, outcome: Outcome
) -> None:
    """One client: a keep-alive connection (proved by a GET of the host's status, which audits nothing),
    then, once released, an unauthenticated GET /api/audit per user agent."""
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT_S)
    try:
        try:
            with opening:
                connection.request("GET", "/admin/host/status")
                connection.getresponse().read()
        except OSError as err:
            outcome.errors.append(f"opening: {type(err).__name__}: {err}")
        finally:
            start.wait()
        for agent in agents:
            began = time.monotonic()
            try:
                connection.request("GET", "/api/audit", headers={"user-agent": agent})
                response = connection.getresponse()
                response.read()
            except OSError as err:
                outcome.errors.append(f"{agent}: {type(err).__name__}: {err}")
                connection.close()  # the next request opens a new one
                continue
            outcome.statuses[response.status] += 1  # one Outcome per client: no lock needed
            outcome.latencies.append(time.monotonic() - began)
    finally:
        connection.close()


def run_phase(stack: Stack, clients: int, requests: int, deadline: float) -> tuple[list[str], float, Outcome]:
    agents = [f"contention-{clients}-{i:04d}" for i in range(requests)]
    outcomes = [Outcome() for _ in range(clients)]
    opening = threading.Semaphore(OPENING_AT_ONCE)
    start = threading.Barrier(clients + 1, timeout=REQUEST_TIMEOUT_S)
    threads = [
        threading.Thread(
            target=refuse,
            args=(stack.host.url, agents[i::clients], opening, start, outcomes[i]),
            name=f"client-{i}",
            daemon=True,
        )
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    busy = sum(t.is_alive() for t in threads)
    answered = sum(sum(o.statuses.values()) for o in outcomes)
    assert busy == 0, (
        f"{clients} clients: {busy} still waiting at the deadline, {answered} of {requests} requests "
        f"answered; the host logged {len(audit_failures(stack))} failed audit write(s)\n"
        f"{stack.host.output()[-3000:]}"
    )
    total = Outcome()
    for outcome in outcomes:
        total.statuses += outcome.statuses
        total.errors += outcome.errors
        total.latencies += outcome.latencies
    return agents, time.monotonic() - began, total


def audit_failures(stack: Stack) -> list[str]:
    """The host's log lines saying a refusal's record could not be written."""
    return [line for line in stack.host.output().splitlines() if "could not be audited" in line]


def denied_agents(stack: Stack) -> Counter[str]:
    """The user agent of every ACCESS_DENIED record in the audit table."""
    table = stack.tables().get_table_client(AUDIT_TABLE)
    rows = table.query_entities(
        "action eq @action and RowKey ne @head",
        parameters={"action": "ACCESS_DENIED", "head": "head"},
        select=["PartitionKey", "RowKey", "actor_user_agent"],
    )
    return Counter(str(row.get("actor_user_agent")) for row in rows)


def listen_overflows() -> int | None:
    """This network namespace's count of connections a full listen backlog turned away (TcpExt)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return None


@pytest.mark.timeout(300)
def test_every_refusal_is_recorded_under_parallel_clients(stack: Stack) -> None:
    deadline = time.monotonic() + DEADLINE_S
    expected = 0
    for clients, requests in PHASES:
        overflows_before = listen_overflows()
        agents, seconds, outcome = run_phase(stack, clients, requests, deadline)
        overflows_after = listen_overflows()
        overflows = (
            overflows_after - overflows_before
            if overflows_after is not None and overflows_before is not None
            else "unknown"
        )
        latencies = sorted(outcome.latencies) or [0.0]
        print(
            f"\n{clients} clients x {requests} refused GETs: {seconds:.1f} s, "
            f"p50 {latencies[len(latencies) // 2]:.2f} s, max {latencies[-1]:.2f} s, "
            f"listen overflows {overflows}"
        )
        assert outcome.errors == [], f"{len(outcome.errors)} request(s) failed, e.g. {outcome.errors[:5]}"
        assert outcome.statuses == {401: requests}, outcome.statuses

        stored = denied_agents(stack)
        missing = [a for a in agents if stored[a] == 0]
        twice = [a for a in agents if stored[a] > 1]
        not_audited = audit_failures(stack)
        assert (missing, twice) == ([], []), (
            f"{clients} clients: {len(missing)} of {requests} refusals have no ACCESS_DENIED record, "
            f"{len(twice)} have more than one; the host logged {len(not_audited)} failed audit write(s), "
            f"e.g. {not_audited[:3]}"
        )
        expected += requests
        assert sum(stored.values()) == expected

        status, body = stack.client.get("/api/audit/verify?fresh=true")
        assert status == 200, body
        assert (body["status"], body["records"], body["breaks"]) == ("ok", expected, []), body

"""Scale-out (issue 21): the concurrency rules hold across four dev-host instances of the app on one
Azurite and one Key Vault emulator, the callers spread over them — the short form of ``bench.scale_out``
(its races and invariant checks, one round): 20 concurrent forced rotations make one version and one
outcome per request, 20 concurrent approvals exactly two, 10 concurrent executions one; the trail
verifies and no value leaks."""

from __future__ import annotations

from bench.scale_out import measure


def test_four_instances_keep_every_concurrency_rule() -> None:
    races = measure(instances=4, rounds=1)  # raises bench.service.Broken naming a broken invariant
    assert len(races.secrets) == 1 and all(len(s) == 1 for s in races.seconds.values()), races

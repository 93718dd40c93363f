"""Load and crashes (issue 21), the short form of ``bench.http_load``: a mixed workload over HTTP on four
dev-host instances, then its checks (no server error, one outcome record per accepted rotation request,
exactly the revocation steps the callers were told of on record, an enabled current value per secret, no
value anywhere, a verifying trail) — steady, and with an instance SIGKILLed and restarted every 5 s."""

from __future__ import annotations

import re

import pytest

from bench.http_load import parse_args, run_load


@pytest.mark.parametrize("kill", [[], ["--kill-every", "5"]], ids=["steady", "instances-killed"])
def test_a_mixed_workload_leaves_every_transition_on_record_once(
    kill: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = parse_args(
        ["--clients", "8", "--seconds", "15", "--secrets", "8", "--databases", "2", "--settle", "240", *kill]
    )
    status = run_load(args)
    out, err = capsys.readouterr()
    assert status == 0, err[-3000:]
    assert "every check held" in out
    killed = re.search(r"(\d+) instance\(s\) killed", out)
    assert killed is not None and (int(killed.group(1)) >= 2) == bool(kill), out

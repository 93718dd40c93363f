"""A small development host that serves this Functions app the way Core Tools' ``func start`` does locally.

Core Tools cannot be installed on every machine (its npm postinstall downloads from a CDN), so the repository
carries this stand-in. Run it with ``python -m devtools.host --help``; start it from Python (tests, launchers)
with ``HostProcess.start()``. ``devtools.host.ncrontab.parse`` validates timer schedules.

Modules: ``cli`` (command line, startup), ``server`` (HTTP triggers, admin API, Event Grid webhook),
``routes`` (route templates), ``triggers`` (timers, queue pollers, trigger payloads), ``functions``
(indexing and invoking the app's functions), ``settings`` (local.settings.json, host.json), ``ncrontab``,
``schedule_monitor`` (timers' missed occurrences, with ``--state-dir``), ``process``
(HostProcess; HostFleet: several instances of one app on the same peers).
Development use only: loopback addresses only, function keys are not enforced.
"""

from devtools.host.process import HostFleet, HostProcess

__all__ = ["HostFleet", "HostProcess"]

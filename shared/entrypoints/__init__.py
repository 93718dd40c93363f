"""Entry points: one Blueprint per area, declared in ``index.py`` (the function index, all a cold start
imports); each area's module holds its thin trigger functions (parse, call one service, map), imported by a
function's first call."""

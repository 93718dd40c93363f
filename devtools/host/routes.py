"""HTTP trigger route templates, matched the way the Functions host (ASP.NET Core routing) matches them.

Supported: literal segments (case-insensitive), ``{name}``, typed ``{id:int}`` (int, long, bool, alpha,
guid, double, float, decimal, datetime are checked; other constraints such as ``minlength(3)`` match any
segment), optional ``{name?}``, defaults ``{name=value}``, and catch-all ``{*rest}`` / ``{**rest}`` as the
last segment. A parameter may share a segment with literals (``files/{name}.{ext}``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = ["Route", "RouteError", "RouteTable", "compile_route"]


class RouteError(ValueError):
    """A route template the dev host cannot parse."""


_CONSTRAINTS: dict[str, str] = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"\{?[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}\}?",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "datetime": r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?",
}
_PARAMETER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Precedence per segment, lower wins, as ASP.NET orders routes: literal, constrained, plain, catch-all.
_LITERAL, _CONSTRAINED, _PLAIN, _CATCH_ALL = range(4)


@dataclass(frozen=True)
class Route:
    """One HTTP function's route: the compiled template plus the methods it accepts (empty = all)."""

    function_name: str
    template: str
    methods: frozenset[str]
    pattern: re.Pattern[str] = field(repr=False)
    defaults: tuple[tuple[str, str], ...] = ()
    precedence: tuple[int, ...] = ()

    def match(self, path: str) -> dict[str, str] | None:
        """Route parameters if ``path`` (no prefix, no leading slash, still percent-encoded) matches."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        params = dict(self.defaults)
        for name, value in found.groupdict().items():
            if value is not None:
                params[name] = unquote(value)
        return params

    def allows(self, method: str) -> bool:
        return not self.methods or method.upper() in self.methods


def compile_route(function_name: str, template: str, methods: Iterable[str] = ()) -> Route:
    """Compile ``template`` (as written in the binding, without the route prefix). Raises RouteError."""
    text = template.strip().strip("/")
    segments = text.split("/") if text else []
    regex = ""
    defaults: list[tuple[str, str]] = []
    precedence: list[int] = []
    seen: set[str] = set()
    for index, segment in enumerate(segments):
        if not segment:
            raise RouteError(f"route {template!r} of {function_name!r} has an empty segment ('//')")
        part, rank, optional = _compile_segment(segment, template, function_name, defaults, seen)
        if rank == _CATCH_ALL and index != len(segments) - 1:
            raise RouteError(f"route {template!r} of {function_name!r}: a catch-all must be the last segment")
        precedence.append(rank)
        slash = "/" if index else ""
        # An optional (or catch-all) whole segment may be missing along with its slash.
        regex += f"(?:{slash}{part})?" if optional else f"{slash}{part}"
    return Route(
        function_name=function_name,
        template=template,
        methods=frozenset(method.upper() for method in methods),
        pattern=re.compile(regex, re.IGNORECASE),
        defaults=tuple(defaults),
        precedence=tuple(precedence),
    )


def _compile_segment(
    segment: str, template: str, function_name: str, defaults: list[tuple[str, str]], seen: set[str]
) -> tuple[str, int, bool]:
    """Regex for one segment, its precedence rank, and whether the whole segment may be absent."""
    pieces = _PARAMETER.split(segment)
    literals, parameters = pieces[0::2], pieces[1::2]
    if any("{" in text or "}" in text for text in literals):
        raise RouteError(f"route {template!r} of {function_name!r} has unbalanced braces in {segment!r}")
    if not parameters:
        return re.escape(segment), _LITERAL, False
    lone = len(parameters) == 1 and not literals[0] and not literals[1]
    regex = ""
    rank = _PLAIN
    optional = False
    for literal, spec in zip(literals, [*parameters, None], strict=True):
        regex += re.escape(literal)
        if spec is None:
            break
        name, constraint, default, is_optional, catch_all = _parse_parameter(spec, template, function_name)
        if name.lower() in seen:
            raise RouteError(f"route {template!r} of {function_name!r} repeats parameter {name!r}")
        seen.add(name.lower())
        if catch_all:
            if not lone:
                raise RouteError(
                    f"route {template!r} of {function_name!r}: a catch-all must be a whole segment"
                )
            return f"(?P<{name}>.*)", _CATCH_ALL, True
        if default is not None:
            defaults.append((name, default))
        body = _CONSTRAINTS.get(constraint.lower(), r"[^/]+") if constraint else r"[^/]+"
        if constraint:
            rank = min(rank, _CONSTRAINED)
        if (is_optional or default is not None) and lone:
            optional = True
        elif is_optional or default is not None:
            body = f"(?:{body})?"
        regex += f"(?P<{name}>{body})"
    return regex, rank, optional


def _parse_parameter(spec: str, template: str, function_name: str) -> tuple[str, str, str | None, bool, bool]:
    """``name[:constraint[(args)]...][?|=default]`` → name, first constraint, default, optional, catch-all."""
    catch_all = spec.startswith("*")
    spec = spec.lstrip("*")
    default: str | None = None
    if "=" in spec:
        spec, default = spec.split("=", 1)
    optional = spec.endswith("?")
    spec = spec.rstrip("?")
    name, _, constraints = spec.partition(":")
    if not _NAME.match(name):
        raise RouteError(f"route {template!r} of {function_name!r} has an invalid parameter name {name!r}")
    constraint = constraints.split(":", 1)[0]
    if "(" in constraint:
        constraint = ""  # minlength(3), regex(...): accept any segment
    return name, constraint, default, optional, catch_all


class RouteTable:
    """All HTTP routes, tried in ASP.NET's precedence order (literals before parameters before catch-alls)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = sorted(routes, key=lambda route: ((*route.precedence, 99), route.template.lower()))

    def resolve(self, path: str, method: str) -> tuple[Route, dict[str, str]] | list[str] | None:
        """The route and its parameters; or the allowed methods when only the method is wrong; or None."""
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            if route.allows(method):
                return route, params
            allowed.extend(sorted(route.methods))
        return sorted(set(allowed)) if allowed else None

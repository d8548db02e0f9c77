"""AnalysisTemplates: validation, Argo's `{{args.x}}` templating, and the typed metrics of a run (§4)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simulator.analysis.prometheus import valid_address
from simulator.k8s.fields import Fields, parse_duration

__all__ = ["Metric", "RunSpecError", "build_run_spec", "parse_metric", "substitute", "validate_template"]

PROVIDERS_IMPLEMENTED = {"web", "job", "prometheus"}
PROVIDERS_KNOWN = {
    "kayenta",
    "datadog",
    "wavefront",
    "newRelic",
    "cloudWatch",
    "graphite",
    "influxdb",
    "skywalking",
    "plugin",
}
_METRIC_FIELDS = {
    "name",
    "interval",
    "initialDelay",
    "count",
    "successCondition",
    "failureCondition",
    "failureLimit",
    "inconclusiveLimit",
    "consecutiveErrorLimit",
    "consecutiveSuccessLimit",
    "provider",
}
_PLACEHOLDER = re.compile(r"\{\{\s*args\.([A-Za-z0-9_.-]+)\s*\}\}")


class RunSpecError(Exception):
    pass


@dataclass(frozen=True)
class Metric:
    name: str
    provider: str
    provider_spec: dict[str, Any]
    success_condition: str = ""
    failure_condition: str = ""
    count: int = 0
    interval: float | None = None
    initial_delay: float = 0.0
    failure_limit: int = 0
    inconclusive_limit: int = 0
    consecutive_error_limit: int = 4
    consecutive_success_limit: int = 0

    @property
    def effective_count(self) -> int | None:
        """Argo: `count` if set, else 1 without an interval, else unbounded (None)."""
        if self.count > 0:
            return self.count
        return 1 if self.interval is None else None


def substitute(value: Any, args: Mapping[str, str]) -> Any:
    """Replace `{{args.name}}` everywhere in a JSON value; an unknown name is an error as in Argo."""
    if isinstance(value, str):

        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in args:
                raise RunSpecError(f"failed to resolve {{{{args.{name}}}}}")
            return args[name]

        return _PLACEHOLDER.sub(one, value)
    if isinstance(value, list):
        return [substitute(v, args) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, args) for k, v in value.items()}
    return value


def _templated(value: object) -> bool:
    return isinstance(value, str) and bool(_PLACEHOLDER.search(value))


def validate_template(spec: dict[str, Any], path: str = "spec") -> tuple[list[str], list[str]]:
    """Schema checks of an AnalysisTemplate spec; placeholders are accepted where a value goes."""
    f = Fields.root(spec, path)
    f.known({"args", "metrics", "dryRun"}, {"measurementRetention", "templates"})
    for a in f.items("args"):
        a.known({"name", "value"}, {"valueFrom"})
        a.string("name", required=True)
    metrics = f.items("metrics")
    if not metrics:
        f.problem("metrics", "at least one metric is required")
    names: set[str] = set()
    for m in metrics:
        m.known(_METRIC_FIELDS)
        name = m.string("name", required=True)
        if name in names:
            m.problem("name", f"duplicate metric name {name!r}")
        names.add(name)
        for key in ("count", "failureLimit", "inconclusiveLimit", "consecutiveErrorLimit", "consecutiveSuccessLimit"):
            if not _templated(m.data.get(key)):
                value = m.data.get(key)
                if isinstance(value, str) and value.lstrip("-").isdigit():
                    continue
                m.integer(key)
        for key in ("interval", "initialDelay"):
            if not _templated(m.data.get(key)):
                m.duration(key)
        provider = m.sub("provider")
        kinds = [k for k in provider.data if provider.data[k] is not None]
        if len(kinds) != 1:
            provider.problem("", f"exactly one provider is required, got {sorted(kinds) or 'none'}")
        for kind in kinds:
            if kind in PROVIDERS_IMPLEMENTED:
                continue
            if kind in PROVIDERS_KNOWN:
                provider.notice(kind, "provider is not implemented by the simulator; its measurements end in Error")
            else:
                provider.problem(kind, "unknown provider")
        if provider.has("web"):
            web = provider.sub("web")
            web.known(
                {"url", "method", "headers", "body", "jsonBody", "timeoutSeconds", "jsonPath", "insecure"},
                {"authentication"},
            )
            web.string("url", required=True)
        if provider.has("prometheus"):
            prom = provider.sub("prometheus")
            prom.known({"address", "query", "timeout", "headers", "insecure"}, {"authentication"})
            prom.string("query", required=True)
            address = prom.string("address")
            if address and not _templated(address) and not valid_address(address):
                prom.problem("address", f"expected a URL (http://HOST:PORT), got {address!r}")
            timeout = prom.data.get("timeout")
            if not _templated(timeout) and not (isinstance(timeout, str) and timeout.isdigit()):
                prom.integer("timeout", minimum=0)  # seconds, as in Argo
            for h in prom.items("headers"):
                h.known({"key", "value"})
                h.string("key", required=True)
        if provider.has("job"):
            job = provider.sub("job")
            job.known({"spec", "metadata"})
            if not job.sub("spec").sub("template").sub("spec").items("containers"):
                job.problem("spec.template.spec.containers", "at least one container is required")
    return f.problems, f.notices


def _int(value: object, what: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(str(value))
    except ValueError:
        raise RunSpecError(f"{what}: expected an integer, got {value!r}") from None


def parse_metric(raw: dict[str, Any]) -> Metric:
    """A metric whose placeholders are already substituted."""
    name = str(raw.get("name", ""))
    provider = {k: v for k, v in (raw.get("provider") or {}).items() if v is not None}
    kind = next(iter(provider), "")
    try:
        interval = parse_duration(raw["interval"]) if raw.get("interval") is not None else None
        initial_delay = parse_duration(raw["initialDelay"]) if raw.get("initialDelay") is not None else 0.0
    except ValueError as exc:
        raise RunSpecError(f'metric "{name}": {exc}') from None
    return Metric(
        name=name,
        provider=kind,
        provider_spec=provider.get(kind) or {},
        success_condition=str(raw.get("successCondition") or ""),
        failure_condition=str(raw.get("failureCondition") or ""),
        count=_int(raw.get("count"), f'metric "{name}" count', 0),
        interval=interval,
        initial_delay=initial_delay,
        failure_limit=_int(raw.get("failureLimit"), f'metric "{name}" failureLimit', 0),
        inconclusive_limit=_int(raw.get("inconclusiveLimit"), f'metric "{name}" inconclusiveLimit', 0),
        consecutive_error_limit=_int(raw.get("consecutiveErrorLimit"), f'metric "{name}" consecutiveErrorLimit', 4),
        consecutive_success_limit=_int(
            raw.get("consecutiveSuccessLimit"), f'metric "{name}" consecutiveSuccessLimit', 0
        ),
    )


def build_run_spec(
    templates: Sequence[tuple[str, dict[str, Any]]], args: Mapping[str, str | None]
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Merge templates into one run: (metrics with arguments substituted, resolved args).

    Template args give defaults, the Rollout's args override them; an arg left without a value, a
    duplicate metric name or an unresolvable placeholder is a RunSpecError (Argo: InvalidSpec).
    """
    resolved: dict[str, str | None] = {}
    for _, spec in templates:
        for a in spec.get("args") or []:
            if a.get("name") not in resolved or resolved[a["name"]] is None:
                resolved[a["name"]] = None if a.get("value") is None else str(a["value"])
    for name, value in args.items():
        resolved[name] = value
    missing = sorted(n for n, v in resolved.items() if v is None)
    if missing:
        raise RunSpecError(f"args.{missing[0]} was not resolved")
    values = {k: v for k, v in resolved.items() if v is not None}
    metrics: list[dict[str, Any]] = []
    seen: set[str] = set()
    for template_name, spec in templates:
        for raw in spec.get("metrics") or []:
            if raw.get("name") in seen:
                raise RunSpecError(f'two metrics named "{raw.get("name")}" (AnalysisTemplate "{template_name}")')
            seen.add(raw.get("name"))
            metrics.append(substitute(raw, values))
    for raw in metrics:
        parse_metric(raw)
    return metrics, values

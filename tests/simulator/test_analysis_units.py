"""Analysis building blocks: jsonPath, the job simulation, measurement and metric phases, templating."""

from __future__ import annotations

import random
from typing import Any

import pytest

from simulator.analysis.controller import measurement_phase, metric_phase
from simulator.analysis.jobs import JobError, plan_job
from simulator.analysis.spec import Metric, RunSpecError, build_run_spec, substitute
from simulator.k8s.jsonpath import JsonPathError, select
from simulator.k8s.objects import AnalysisPhase, MetricResult
from simulator.workloads.app import demo_response, parse_image

DOC = {"data": {"ok": True, "items": [{"x": 1}, {"x": 2}]}, "major": "1"}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("", DOC),
        ("{$}", DOC),
        ("{$.data.ok}", True),
        ("{$.major}", "1"),
        ("{$.data.items[1].x}", 2),
        ("{$.data.items[-1]}", {"x": 2}),
        ("{$.data.items[*].x}", [1, 2]),
        ("{$['data']['ok']}", True),
    ],
)
def test_json_path(path: str, value: Any) -> None:
    assert select(DOC, path) == value


def test_json_path_errors() -> None:
    with pytest.raises(JsonPathError, match="missing is not found"):
        select(DOC, "{$.missing}")
    with pytest.raises(JsonPathError, match="out of bounds"):
        select(DOC, "{$.data.items[5]}")


def job(script: str, command: list[str] | None = None) -> dict[str, Any]:
    container = {"name": "j", "image": "alpine", "command": command or ["sh", "-c", "-x"], "args": [script]}
    return {"template": {"spec": {"containers": [container]}}}


@pytest.mark.parametrize(
    ("script", "duration", "code"),
    [
        ("sleep 10 && exit 0", 10, 0),
        ("sleep 5 && exit 1", 5, 1),
        ("exit 0", 0, 0),
        ("false || exit 3", 0, 3),
        ("true && sleep 2", 2, 0),
        ("false && sleep 2", 0, 1),
    ],
)
def test_job_simulation(script: str, duration: float, code: int) -> None:
    plan = plan_job(job(script), random.Random(0))
    assert (plan.duration, plan.exit_code) == (duration, code)


def test_job_random_fail_and_refusal() -> None:
    codes = {plan_job(job("FLIP=$(($(($RANDOM%10))%2)) && exit $FLIP"), random.Random(i)).exit_code for i in range(20)}
    assert codes == {0, 1}
    with pytest.raises(JobError, match="cannot simulate job command 'curl"):
        plan_job(job("curl http://example.com"), random.Random(0))


def metric(**kw: Any) -> Metric:
    return Metric(name="m", provider="web", provider_spec={}, **kw)


@pytest.mark.parametrize(
    ("success", "failure", "result", "phase"),
    [
        ("", "", 1, "Successful"),  # no conditions: Successful (Argo's code, not its docs)
        ("result == 1", "", 1, "Successful"),
        ("result == 1", "", 2, "Failed"),
        ("", "result == 1", 1, "Failed"),
        ("", "result == 1", 2, "Successful"),
        ("result == 1", "result == 2", 3, "Inconclusive"),
        ("result == 1", "result == 1", 1, "Failed"),
    ],
)
def test_measurement_phase(success: str, failure: str, result: int, phase: str) -> None:
    assert measurement_phase(metric(success_condition=success, failure_condition=failure), result) == phase


@pytest.mark.parametrize(
    ("kw", "counts", "phase"),
    [
        ({}, {"count": 1, "successful": 1}, "Successful"),
        ({"count": 3}, {"count": 2, "successful": 2}, "Running"),
        ({"count": 3, "failure_limit": 1}, {"count": 2, "failed": 2}, "Failed"),
        ({"count": 3, "failure_limit": -1}, {"count": 3, "failed": 3}, "Successful"),
        ({"count": 5, "inconclusive_limit": 0}, {"count": 1, "inconclusive": 1}, "Inconclusive"),
        ({}, {"error": 5, "consecutive_error": 5}, "Error"),
        ({}, {"error": 4, "consecutive_error": 4}, "Running"),
        ({"count": 10, "consecutive_success_limit": 2}, {"count": 2, "consecutive_success": 2}, "Successful"),
        ({"count": 3, "consecutive_success_limit": 3}, {"count": 3, "consecutive_success": 1}, "Inconclusive"),
        ({"interval": 5.0}, {"count": 100, "successful": 100}, "Running"),  # no count: runs forever
    ],
)
def test_metric_phase(kw: dict[str, Any], counts: dict[str, Any], phase: str) -> None:
    assert metric_phase(metric(**kw), MetricResult("m", **counts))[0] == AnalysisPhase(phase)


def test_templating_and_run_spec() -> None:
    template = {
        "args": [{"name": "svc"}, {"name": "count", "value": "2"}],
        "metrics": [{"name": "m", "count": "{{args.count}}", "provider": {"web": {"url": "http://{{ args.svc }}/x"}}}],
    }
    metrics, args = build_run_spec([("t", template)], {"svc": "preview"})
    assert metrics[0]["provider"]["web"]["url"] == "http://preview/x"
    assert metrics[0]["count"] == "2" and args == {"svc": "preview", "count": "2"}
    with pytest.raises(RunSpecError, match="args.svc was not resolved"):
        build_run_spec([("t", template)], {})
    with pytest.raises(RunSpecError, match="two metrics named"):
        build_run_spec([("t", template), ("u", template)], {"svc": "x"})
    with pytest.raises(RunSpecError, match="failed to resolve"):
        substitute("{{args.nope}}", {})


@pytest.mark.parametrize(
    ("image", "env", "status", "body"),
    [
        ("argoproj/rollouts-demo:blue", {}, 200, b'"blue"'),
        ("argoproj/rollouts-demo:bad-red", {"ERROR_RATE": "100"}, 500, b'{"error": "simulated failure"}'),
        ("argoproj/rollouts-demo:bad-red", {"ERROR_RATE": "0"}, 200, b'"red"'),
        ("nginx:1.19-alpine", {}, 200, b"nginx:1.19-alpine\n"),
    ],
)
def test_demo_app(image: str, env: dict[str, str], status: int, body: bytes) -> None:
    answer = demo_response(image, env, "/color", True, random.Random(0))
    assert (answer.status, answer.body) == (status, body)


def test_demo_app_latency_health_and_images() -> None:
    assert (
        demo_response("argoproj/rollouts-demo:slow-green", {"LATENCY_MS": "300"}, "/color", True, random.Random()).delay
        == 0.3
    )
    assert demo_response("argoproj/rollouts-demo:blue", {}, "/healthz", False, random.Random()).status == 503
    assert not parse_image("argoproj/rollouts-demo:pink").pullable
    assert not parse_image("nginx:1.19-alpine-argo-error").pullable
    assert parse_image("registry:5000/team/app:1").repository == "registry:5000/team/app"

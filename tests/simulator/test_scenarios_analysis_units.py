"""BLUEGREEN_SPEC §6 scenarios 24-29, Argo's unit tests of analysis gating, with web smoke tests."""

from __future__ import annotations

from simulator import operations
from simulator.k8s.objects import AnalysisTemplate
from tests.simulator.harness import FUNCTIONAL, Sim

ROLLOUT = """
apiVersion: v1
kind: Service
metadata: {name: demo-active}
spec: {selector: {app: demo}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: demo-preview}
spec: {selector: {app: demo}, ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: color}
spec:
  args: [{name: service}, {name: expect}, {name: reject, value: red}]
  metrics:
  - name: color
    successCondition: result == '{{args.expect}}'
    failureCondition: result == '{{args.reject}}'
    provider:
      web: {url: "http://{{args.service}}.default.svc.cluster.local/color"}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: demo}
spec:
  replicas: 2
  selector: {matchLabels: {app: demo}}
  template:
    metadata: {labels: {app: demo}}
    spec: {containers: [{name: demo, image: "argoproj/rollouts-demo:blue"}]}
  strategy:
    blueGreen:
      activeService: demo-active
      previewService: demo-preview
      STRATEGY
"""


async def _demo(strategy: str) -> Sim:
    sim = Sim()
    await sim.apply_text(ROLLOUT.replace("STRATEGY", strategy))
    await sim.until(lambda: sim.phase("demo") == "Healthy")
    return sim


async def _set_image(sim: Sim, image: str) -> None:
    operations.set_image(sim.store, "demo", "demo", image)
    await sim.cluster.settle()


def _pre(expect: str, *, enabled: str = "true", seconds: int = 0, reject: str = "red") -> str:
    return (
        f"autoPromotionEnabled: {enabled}\n      autoPromotionSeconds: {seconds}\n"
        "      prePromotionAnalysis:\n        templates: [{templateName: color}]\n"
        f"        args: [{{name: service, value: demo-preview}}, {{name: expect, value: {expect}}}, "
        f"{{name: reject, value: {reject}}}]"
    )


def _post(expect: str) -> str:
    return (
        "postPromotionAnalysis:\n        templates: [{templateName: color}]\n"
        f"        args: [{{name: service, value: demo-active}}, {{name: expect, value: {expect}}}]"
    )


async def test_rollout_pre_promotion_analysis_becomes_inconclusive() -> None:
    """§6.24: an inconclusive pre run pauses (InconclusiveAnalysisRun); promote starts a fresh run."""
    sim = await _demo(_pre("purple", enabled="false"))
    await _set_image(sim, "argoproj/rollouts-demo:green")
    await sim.until(lambda: sim.phase("demo") == "Paused")
    st = sim.status("demo")
    assert [p.reason for p in st.pause_conditions] == ["InconclusiveAnalysisRun"]
    assert st.pre_promotion is not None and st.pre_promotion.status == "Inconclusive"
    assert st.message == "InconclusiveAnalysisRun"
    assert sim.selector("demo-active") == sim.hash("demo", 1)
    await sim.promote("demo")
    runs = sim.runs("demo")
    assert len(runs) == 2, "promote re-tests instead of treating Inconclusive as a pass"
    assert sim.selector("demo-active") == sim.hash("demo", 1)


async def test_post_promotion_analysis_run_handle_inconclusive() -> None:
    """§6.25: an inconclusive post run pauses with active on the new revision; nothing scales down."""
    sim = await _demo(_post("purple"))
    await _set_image(sim, "argoproj/rollouts-demo:green")
    await sim.until(lambda: sim.phase("demo") == "Paused")
    st = sim.status("demo")
    assert st.message == "InconclusiveAnalysisRun"
    assert st.active_selector == sim.hash("demo", 2) and st.stable_rs == sim.hash("demo", 1)
    await sim.advance(120)
    assert sim.sizes("demo") == {1: 2, 2: 2}


async def test_abort_rollout_on_error_pre_promotion_analysis() -> None:
    """§6.26: a pre run that ends in Error (the Service answers 500) aborts the update."""
    sim = await _demo(_pre("green"))
    bad = {"name": "demo", "image": "argoproj/rollouts-demo:bad-green", "env": [{"name": "ERROR_RATE", "value": "100"}]}
    await sim.patch("demo", {"spec": {"template": {"spec": {"containers": [bad]}}}})
    took = await sim.until(lambda: sim.phase("demo") == "Degraded", limit=600)
    assert 40 <= took <= 60  # five errors 10 s apart exceed consecutiveErrorLimit (4)
    run = sim.runs("demo")[0]
    assert (run.status.phase, run.status.metric_results[0].error) == ("Error", 5)
    st = sim.status("demo")
    assert st.abort
    assert st.message.startswith(
        "RolloutAborted: Rollout aborted update to revision 2: Blue/green pre-promotion analysis phase error/failed"
    )
    assert sim.selector("demo-active") == sim.hash("demo", 1)


async def test_do_not_create_pre_promotion_analysis_run() -> None:
    """§6.27: no run before the preview is saturated, on the initial deploy, or with no templates."""
    sim = await _demo(_pre("green"))
    assert sim.runs("demo") == []  # initial deploy
    await _set_image(sim, "argoproj/rollouts-demo:green")
    assert sim.runs("demo") == []  # preview pods not available yet
    await sim.until(lambda: len(sim.runs("demo")) == 1)
    assert all(p.status.ready for p in sim.pods("demo", 2))
    empty = await _demo("prePromotionAnalysis: {templates: []}")
    await _set_image(empty, "argoproj/rollouts-demo:green")
    await empty.until(lambda: empty.phase("demo") == "Healthy")
    assert empty.runs("demo") == []


async def test_rollout_pre_promotion_analysis_switch_service_after_success() -> None:
    """§6.28: with auto-promotion, the pass that sees success switches and marks stable."""
    sim = await _demo(_pre("green"))
    await _set_image(sim, "argoproj/rollouts-demo:green")
    await sim.until(lambda: sim.status("demo").stable_rs == sim.hash("demo", 2))
    st = sim.status("demo")
    assert (st.phase, st.active_selector) == ("Healthy", sim.hash("demo", 2))
    assert st.pause_conditions == [] and not st.controller_pause
    assert st.pre_promotion is not None and st.pre_promotion.status == "Successful"


async def test_rollout_pre_promotion_analysis_honor_auto_promotion_seconds() -> None:
    """§6.29: the autoPromotionSeconds countdown starts when the pre run has succeeded."""
    sim = await _demo(_pre("green", seconds=20))
    await _set_image(sim, "argoproj/rollouts-demo:green")
    await sim.until(lambda: sim.phase("demo") == "Paused")
    paused = sim.status("demo").pause_conditions[0].start_time
    assert sim.status("demo").pre_promotion.status == "Successful"  # type: ignore[union-attr]
    await sim.until(lambda: sim.phase("demo") == "Healthy")
    assert sim.cluster.clock.now() - paused == 20


async def test_web_background_template_is_refused_then_works_with_a_count() -> None:
    """Argo's web-background metric runs forever: InvalidSpec as pre-promotion analysis; with a count it
    queries the (simulated) API server's /version and checks `result.major == '1'` via JSON."""
    sim = Sim()
    await sim.apply(FUNCTIONAL / "analysistemplate-web-background.yaml")
    await sim.apply_text(
        ROLLOUT.replace("STRATEGY", "prePromotionAnalysis: {templates: [{templateName: web-background}]}")
    )
    assert sim.phase("demo") == "Degraded"
    assert 'metric "web" which runs indefinitely' in sim.status("demo").message
    template = sim.store.get(AnalysisTemplate, "web-background")
    template.spec["metrics"][0]["count"] = 2
    sim.store.update(template, spec_changed=True)
    await sim.until(lambda: sim.phase("demo") == "Healthy")
    await _set_image(sim, "argoproj/rollouts-demo:green")
    await sim.until(lambda: sim.status("demo").stable_rs == sim.hash("demo", 2))
    (run,) = sim.runs("demo")
    result = run.status.metric_results[0]
    assert (run.status.phase, result.successful) == ("Successful", 2)
    assert result.measurements[0].value == '{"major": "1", "minor": "31", "gitVersion": "v1.31.0-bluegreen-simulator"}'


async def test_dry_run_metric_never_decides() -> None:
    """`dryRun`: a failing metric is measured and reported, and the update goes on."""
    sim = await _demo(_pre("purple", reject="green") + "\n        dryRun: [{metricName: color}]")
    await _set_image(sim, "argoproj/rollouts-demo:green")
    await sim.until(lambda: sim.status("demo").stable_rs == sim.hash("demo", 2))
    (run,) = sim.runs("demo")
    summary = run.to_json()["status"]
    assert run.status.phase == "Successful"
    assert summary["dryRunSummary"] == {"count": 1, "successful": 0, "failed": 1, "inconclusive": 0, "error": 0}
    assert summary["runSummary"]["count"] == 0

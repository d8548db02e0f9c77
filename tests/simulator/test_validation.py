"""InvalidSpec (§1.3): each reason, as the Rollout's Degraded message; fixing the cause heals it."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from simulator.operations import merge_patch
from tests.simulator.harness import Sim

BASE = """
apiVersion: v1
kind: Service
metadata: {name: active}
spec: {selector: {app: demo}}
---
apiVersion: v1
kind: Service
metadata: {name: other, annotations: {argo-rollouts.argoproj.io/managed-by-rollouts: someone-else}}
spec: {selector: {app: demo}}
---
apiVersion: v1
kind: Service
metadata: {name: mismatch}
spec: {selector: {app: demo, tier: web}}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: forever}
spec: {metrics: [{name: web, interval: 5s, provider: {web: {url: "http://active/"}}}]}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: needs-arg}
spec: {args: [{name: url}], metrics: [{name: web, provider: {web: {url: "{{args.url}}"}}}]}
"""

ROLLOUT: dict[str, Any] = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "demo"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "demo"}},
        "template": {
            "metadata": {"labels": {"app": "demo"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        },
        "strategy": {"blueGreen": {"activeService": "active"}},
    },
}


def bg(**fields: Any) -> dict[str, Any]:
    return {"spec": {"strategy": {"blueGreen": fields}}}


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        (bg(activeService="missing"), 'spec.strategy.blueGreen.activeService: Service "missing" not found'),
        (bg(previewService="active"), "spec.strategy.blueGreen.previewService: must differ from activeService"),
        (bg(previewService="mismatch"), 'Service "mismatch" has unmatch label "tier" in rollout'),
        (bg(previewService="other"), 'Service "other" is managed by another Rollout ("someone-else")'),
        (
            bg(prePromotionAnalysis={"templates": [{"templateName": "nope"}]}),
            'spec.strategy.blueGreen.prePromotionAnalysis.templates: AnalysisTemplate "nope" not found',
        ),
        (
            bg(postPromotionAnalysis={"templates": [{"templateName": "needs-arg"}]}),
            "spec.strategy.blueGreen.postPromotionAnalysis: args.url was not resolved",
        ),
        (
            bg(prePromotionAnalysis={"templates": [{"templateName": "forever"}]}),
            'spec.strategy.blueGreen.prePromotionAnalysis: AnalysisTemplate has metric "web" which runs indefinitely',
        ),
        (
            {"spec": {"selector": {"matchLabels": {"app": "other"}}}},
            "spec.selector: `selector` does not match template `labels`",
        ),
        ({"spec": {"replicas": -1}}, "spec.replicas: must be >= 0, got -1"),
        (
            {"spec": {"progressDeadlineSeconds": 10, "minReadySeconds": 10}},
            "spec.progressDeadlineSeconds: must be greater than minReadySeconds",
        ),
        (
            {"spec": {"revisionHistoryLimit": 1, "strategy": {"blueGreen": {"scaleDownDelayRevisionLimit": 2}}}},
            "spec.strategy.blueGreen.scaleDownDelayRevisionLimit: must be <= revisionHistoryLimit",
        ),
        ({"spec": {"strategy": {"blueGreen": None}}}, "spec.strategy: one of blueGreen or canary is required"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
async def test_invalid_spec(patch: dict[str, Any], reason: str) -> None:
    sim = Sim()
    await sim.apply_text(BASE + "---\n" + yaml.safe_dump(merge_patch(ROLLOUT, patch)))
    status = sim.status("demo")
    assert status.phase == "Degraded"
    assert status.message.startswith(f'InvalidSpec: The Rollout "demo" is invalid: {reason}')
    assert sim.replica_sets("demo") == {}


async def test_missing_service_created_later_heals() -> None:
    sim = Sim()
    rollout = merge_patch(ROLLOUT, bg(activeService="late"))
    await sim.apply_text(yaml.safe_dump(rollout))
    assert sim.phase("demo") == "Degraded"
    await sim.apply_text("apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec: {selector: {app: demo}}\n")
    await sim.until(lambda: sim.phase("demo") == "Healthy")
    # Re-applying the Service manifest keeps the hash the controller added (a three-way merge).
    await sim.apply_text("apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec: {selector: {app: demo}}\n")
    assert sim.selector("late") == sim.hash("demo", 1)

"""BLUEGREEN_SPEC §6 scenarios 39-43: ephemeral metadata, strategy switch, workloadRef, invalid specs."""

from __future__ import annotations

import pytest

from simulator.k8s.objects import Deployment, Service
from tests.simulator.harness import E2E, Sim, patches, read


async def test_ephemeral_metadata() -> None:
    """§6.39 TestEphemeralMetadata: role labels follow preview/active; patches relabel pods in place."""
    sim = Sim()
    await sim.apply(E2E / "TestEphemeralMetadata.yaml")
    name = "ephemeral-metadata-bg"
    await sim.until(lambda: sim.phase(name) == "Healthy")

    def roles(revision: int, key: str = "role") -> set[str | None]:
        return {p.metadata.labels.get(key) for p in sim.pods(name, revision)}

    assert roles(1) == {"active"}
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    assert (roles(2), roles(1)) == ({"preview"}, {"active"})
    pods_before = {p.name for p in sim.pods(name, 2)}
    preview_patch, active_patch = patches("TestEphemeralMetadata")
    await sim.patch(name, preview_patch)
    assert (roles(2), roles(2, "role2")) == ({None}, {"preview2"})
    assert {p.name for p in sim.pods(name, 2)} == pods_before  # relabelled in place, no new pods
    await sim.promote(name)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert (roles(2), roles(2, "role2")) == ({"active"}, {None})
    await sim.patch(name, active_patch)
    assert (roles(2), roles(2, "role2")) == ({None}, {"active2"})
    assert list(sim.replica_sets(name)) == [1, 2]


async def test_blue_green_to_canary() -> None:
    """§6.40: switching the strategy away from blueGreen gives the Service its plain selector back."""
    sim = Sim()
    await sim.apply(E2E / "TestBlueGreenToCanary.yaml")
    name = "bluegreen-to-canary"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.selector(name) == sim.hash(name, 1)
    (patch,) = patches("TestBlueGreenToCanary")
    await sim.patch(name, patch)
    assert sim.store.get(Service, name).selector == {"app": name}
    assert "argo-rollouts.argoproj.io/managed-by-rollouts" not in sim.store.get(Service, name).metadata.annotations
    assert sim.phase(name) == "Degraded"
    assert "canary strategy is not implemented" in sim.status(name).message


async def test_workload_ref() -> None:
    """§6.41 TestWorkloadRef: Degraded without the Deployment, Healthy with it, recoverable both ways."""
    sim = Sim()
    text = read(E2E / "TestWorkloadRef.yaml").split("\n---\n# via ApplyManifests()")
    await sim.apply_text(text[0])
    name = "rollout-ref-deployment"
    assert sim.phase(name) == "Degraded"
    assert 'Deployment "rollout-ref-deployment" not found' in sim.status(name).message
    assert sim.selector("rollout-bluegreen-active") == ""
    await sim.apply_text(text[1])  # the Deployment
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.selector("rollout-bluegreen-active") == sim.hash(name, 1)
    deployment = sim.store.get(Deployment, name)
    deployment.spec["template"]["spec"]["containers"][0]["image"] = "argoproj/rollouts-demo:error"
    sim.store.update(deployment, spec_changed=True)
    await sim.until(lambda: sim.phase(name) == "Degraded")
    deployment = sim.store.get(Deployment, name)
    deployment.spec["template"]["spec"]["containers"][0]["image"] = "argoproj/rollouts-demo:blue"
    sim.store.update(deployment, spec_changed=True)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    missing, back = patches("TestWorkloadRef")
    await sim.patch(name, missing)
    assert sim.phase(name) == "Degraded"
    await sim.patch(name, back)
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.apply_text(text[2])  # the same Rollout with an inline template
    await sim.until(lambda: sim.phase(name) == "Healthy")


async def test_workload_ref_template() -> None:
    """§6.41 TestWorkloadRefTemplate: workloadRef and a template together are invalid."""
    sim = Sim()
    await sim.apply(E2E / "TestWorkloadRefTemplate.yaml")
    st = sim.status("rollout-ref-deployment")
    assert st.phase == "Degraded"
    assert [c.reason for c in st.conditions] == ["InvalidSpec"]
    assert st.message.endswith("template must be empty for workload reference rollout")


async def test_fix_invalid_spec() -> None:
    """§6.43 TestFixInvalidSpec: a missing AnalysisTemplate is InvalidSpec until it is created."""
    sim = Sim()
    text = read(E2E / "TestBlueGreenAnalysis.yaml")
    await sim.apply_text(text)
    name = "bluegreen-analysis"
    st = sim.status(name)
    assert st.phase == "Degraded"
    assert st.message == (
        f'InvalidSpec: The Rollout "{name}" is invalid: '
        'spec.strategy.blueGreen.prePromotionAnalysis.templates: AnalysisTemplate "sleep-job" not found'
    )
    await sim.advance(60)  # retried every 20 s, still invalid, nothing created
    assert sim.replica_sets(name) == {}
    await sim.apply(E2E.parent / "argo-rollouts/test/e2e/functional/analysistemplate-sleep-job.yaml")
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.condition(name, "InvalidSpec") is None


@pytest.mark.parametrize(
    ("test", "replicas", "final"),
    [
        ("TestScaleDownOnSuccess", 2, 0),
        ("TestScaleDownProgressively", 2, 0),
        ("TestScaleDownProgressivelyCompleted", 3, 0),
        ("TestNeverScaleDown", 2, 2),
    ],
)
async def test_workload_ref_scale_down(test: str, replicas: int, final: int) -> None:
    """§6.42: the referenced Deployment is scaled down once / as the Rollout is ready, or never."""
    sim = Sim()
    await sim.apply(E2E / f"{test}.yaml")
    name = "rollout-ref-deployment"
    seen: list[int] = []
    sim.store.subscribe(
        lambda e: seen.append(int(e.object.spec["replicas"])) if isinstance(e.object, Deployment) else None
    )
    await sim.until(lambda: sim.phase(name) == "Healthy")
    assert sim.store.get(Deployment, name).spec["replicas"] == final
    assert sim.status(name).workload_observed_generation == "1"
    if "Progressively" in test:
        assert seen == sorted(seen, reverse=True) and seen[-1] == 0  # only ever down, as Rollout pods get ready
    await sim.patch(name, {"spec": {"replicas": replicas + 1}})
    await sim.until(lambda: sim.counts(name).startswith(f"{replicas + 1}/{replicas + 1}/"))
    assert sim.store.get(Deployment, name).spec["replicas"] == final  # stays down through scaling

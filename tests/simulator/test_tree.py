"""`rollouts get` output against Argo's own captured state (TestGetBlueGreenRollout fixtures)."""

from __future__ import annotations

from simulator.k8s.clock import format_time, parse_time
from simulator.k8s.objects import ANNOTATION_DEADLINE, Pod, ReplicaSet, Rollout
from simulator.manifests import load_path
from simulator.rollouts.tree import RolloutView, human_duration, render
from simulator.web.api import rollout_view
from tests.simulator.harness import E2E, EXAMPLES, FUNCTIONAL, Sim

FIXTURES = EXAMPLES / "argo-rollouts" / "pkg" / "kubectl-argo-rollouts" / "info" / "testdata" / "blue-green"
NOW = parse_time("2019-11-04T04:50:18Z")

GOLDEN = """\
Name:            bluegreen-demo
Namespace:       jesse-test
Status:          ॥ Paused
Message:         BlueGreenPause
Strategy:        BlueGreen
Images:          argoproj/rollouts-demo:blue (stable, active)
                 argoproj/rollouts-demo:green (preview)
Replicas:
  Desired:       3
  Current:       6
  Updated:       3
  Ready:         6
  Available:     3

NAME                                        KIND        STATUS        AGE    INFO
⟳ bluegreen-demo                            Rollout     ॥ Paused      9d
├──# revision:11
│  └──⧉ bluegreen-demo-74b948fccb           ReplicaSet  ✔ Healthy     7d     preview
│     ├──□ bluegreen-demo-74b948fccb-5jz59  Pod         ✔ Running     7d     ready:1/1
│     ├──□ bluegreen-demo-74b948fccb-mkhrl  Pod         ✔ Running     7d     ready:1/1
│     └──□ bluegreen-demo-74b948fccb-vvj2t  Pod         ✔ Running     7d     ready:1/1
├──# revision:10
│  └──⧉ bluegreen-demo-6cbccd9f99           ReplicaSet  ✔ Healthy     7d18h  stable,active
│     ├──□ bluegreen-demo-6cbccd9f99-gk78v  Pod         ✔ Running     7d18h  ready:1/1
│     ├──□ bluegreen-demo-6cbccd9f99-kxj8g  Pod         ✔ Running     7d18h  ready:1/1
│     └──□ bluegreen-demo-6cbccd9f99-t2d4f  Pod         ✔ Running     7d18h  ready:1/1
└──# revision:8
   └──⧉ bluegreen-demo-746d5fddf6           ReplicaSet  • ScaledDown  8d"""


def fixture_view() -> RolloutView:
    objects = load_path(FIXTURES).objects
    (rollout,) = [o for o in objects if isinstance(o, Rollout)]
    return RolloutView(
        rollout,
        [o for o in objects if isinstance(o, ReplicaSet)],
        [o for o in objects if isinstance(o, Pod)],
        [],
    )


def test_get_blue_green_rollout() -> None:
    assert render(fixture_view(), NOW) == GOLDEN


def test_get_blue_green_rollout_scale_down_delay() -> None:
    """TestGetBlueGreenRolloutScaleDownDelay / ...Passed: the INFO column shows the delay left."""
    view = fixture_view()
    old = next(r for r in view.replica_sets if r.revision == 10)
    old.metadata.annotations[ANNOTATION_DEADLINE] = format_time(NOW + 4 * 3600 - 30)
    assert "stable,active,delay:3h59m" in render(view, NOW)
    old.metadata.annotations[ANNOTATION_DEADLINE] = format_time(NOW - 1)
    assert "stable,active,delay:passed" in render(view, NOW)


def test_human_duration() -> None:
    cases = {8: "8s", 119: "119s", 200: "3m20s", 600: "10m", 2520: "42m", 14370: "3h59m", 7 * 86400: "7d"}
    assert {s: human_duration(s) for s in cases} == cases


async def test_live_tree_shows_analysis_runs_and_jobs() -> None:
    sim = Sim()
    await sim.apply(FUNCTIONAL / "analysistemplate-sleep-job.yaml")
    await sim.apply(E2E / "TestBlueGreenAnalysis.yaml")
    name = "bluegreen-analysis"
    await sim.until(lambda: sim.phase(name) == "Healthy")
    await sim.update(name)
    await sim.until(lambda: sim.phase(name) == "Paused")
    view = rollout_view(sim.cluster, name)
    assert view is not None
    lines = [" ".join(line.split()) for line in render(view, sim.cluster.clock.now()).splitlines()]
    run = next(i for i, line in enumerate(lines) if "AnalysisRun" in line)
    assert lines[run].endswith(f"α {name}-{sim.hash(name, 2)}-2-pre AnalysisRun ✔ Successful 5s ✔ 1")
    assert lines[run + 1].startswith("│ └──⊞ analysisrun-") and lines[run + 1].endswith("Job ✔ Successful 5s")

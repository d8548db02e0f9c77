"""Loading manifests: every Argo example loads or is refused as Argo refuses it, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.k8s.fields import ManifestError
from simulator.manifests import load_path, load_text
from tests.simulator.harness import EXAMPLES

MANIFESTS = sorted(p for p in EXAMPLES.rglob("*.y*ml") if not p.name.endswith(".patches.yaml"))
# Argo refuses these too: a placeholder name is not a valid Kubernetes name until the test replaces it.
REFUSED = {"bluegreen-duration-template.yaml": "metadata.name: invalid name 'ROLLOUT_NAME-active'"}


@pytest.mark.parametrize("path", MANIFESTS, ids=[str(p.relative_to(EXAMPLES)) for p in MANIFESTS])
def test_every_argo_example_loads(path: Path) -> None:
    if path.name in REFUSED:
        with pytest.raises(ManifestError) as error:
            load_path(path)
        assert REFUSED[path.name] in str(error.value)
        return
    loaded = load_path(path)
    if path.name != "kustomization.yaml":
        assert loaded.objects


def test_directory_loads_recursively_and_skips_kustomization() -> None:
    loaded = load_path(EXAMPLES / "rollouts-demo")
    assert sorted(f"{o.kind}/{o.name}" for o in loaded.objects) == [
        "Ingress/bluegreen-demo",
        "Ingress/bluegreen-demo-preview",
        "Rollout/bluegreen-demo",
        "Service/bluegreen-demo",
        "Service/bluegreen-demo-preview",
    ]
    assert any("kustomization" in n for n in loaded.notices)


def test_unimplemented_fields_are_reported_by_name() -> None:
    loaded = load_text(
        """
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: x}
spec:
  restartAt: "2026-01-01T00:00:00Z"
  selector: {matchLabels: {app: x}, matchExpressions: []}
  template: {metadata: {labels: {app: x}}, spec: {containers: [{name: x, image: nginx}]}}
  strategy:
    blueGreen: {activeService: x, antiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: {weight: 1}}}
"""
    )
    assert loaded.notices == [
        "Rollout/x: spec.selector.matchExpressions is not implemented by the simulator; ignored",
        "Rollout/x: spec.strategy.blueGreen.antiAffinity is not implemented by the simulator; ignored",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("apiVersion: v1\nkind: Gadget\nmetadata: {name: g}\n", "<doc>#1: Gadget/g: kind: unknown kind 'Gadget'"),
        (
            "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\n"
            "spec: {replicas: two, strategy: {blueGreen: {activeService: a, autoPromotionSeconds: -1}}}\n",
            "<doc>#1: Rollout/r: spec.strategy.blueGreen.autoPromotionSeconds: must be >= 0, got -1\n"
            "<doc>#1: Rollout/r: spec.replicas: expected an integer, got 'two'",
        ),
        (
            "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: r}\nspec: {strategy: {blueGren: {}}}\n",
            "<doc>#1: Rollout/r: spec.strategy.blueGren: unknown field",
        ),
        ("kind: Service\napiVersion: v2\nmetadata: {name: s}\n", "apiVersion: 'v2' is not served for Service"),
        ("kind: Service\napiVersion: v1\n", "<doc>#1: Service/<no name>: metadata: is required"),
        ("a: [1, 2\n", "<doc>:2: invalid YAML: expected ',' or ']'"),
        (
            "apiVersion: argoproj.io/v1alpha1\nkind: AnalysisTemplate\nmetadata: {name: t}\n"
            "spec: {metrics: [{name: m, provider: {web: {url: x}, job: {spec: {}}}}]}\n",
            "exactly one provider is required",
        ),
        ("apiVersion: argoproj.io/v1alpha1\nkind: Experiment\nmetadata: {name: e}\n", "Experiment is not implemented"),
    ],
    ids=[
        "unknown-kind",
        "bad-types",
        "unknown-field",
        "bad-api-version",
        "no-metadata",
        "bad-yaml",
        "two-providers",
        "experiment",
    ],
)
def test_bad_manifests_name_object_and_field(text: str, message: str) -> None:
    with pytest.raises(ManifestError) as error:
        load_text(text, "<doc>")
    assert message in str(error.value)


def test_missing_path() -> None:
    with pytest.raises(ManifestError, match="no such file or directory"):
        load_path("/nonexistent/manifests")

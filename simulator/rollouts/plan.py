"""The blue/green decision: a pure function of (Rollout, observed objects, now) -> Plan.

One call is one reconcile pass of Argo's `rolloutBlueGreen` (BLUEGREEN_SPEC §2.0), in Argo's order:
validate, scaling event, new ReplicaSet, preview Service, template change, ReplicaSets, BlueGreenPause,
active Service, analysis, ephemeral metadata, status. Like Argo, decisions read the status the pass
started from, so a decision made late in a pass (an analysis failure) acts in the next one. The
controller applies the actions and calls again until a pass changes nothing.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from simulator.k8s.clock import format_time, parse_time
from simulator.k8s.hashing import pod_template_hash
from simulator.k8s.objects import (
    ANNOTATION_DEADLINE,
    ANNOTATION_DESIRED,
    ANNOTATION_EPHEMERAL,
    ANNOTATION_PROXY_SERVES,
    ANNOTATION_REVISION,
    ANNOTATION_REVISION_HISTORY,
    HASH_LABEL,
    AnalysisPhase,
    AnalysisRun,
    ObjectMeta,
    ReplicaSet,
    Rollout,
    Service,
)
from simulator.k8s.rollout_status import PauseCondition, Phase, RolloutStatus, RunStatus
from simulator.rollouts.actions import (
    Action,
    CreateAnalysisRun,
    CreateReplicaSet,
    DeleteAnalysisRun,
    DeletePod,
    DeleteReplicaSet,
    Event,
    Observed,
    Plan,
    ScaleDeployment,
    SetServiceSelector,
    TerminateAnalysisRun,
    UpdateReplicaSet,
)
from simulator.rollouts.spec import BlueGreenSpec, EphemeralMetadata, RolloutAnalysis, RolloutSpec, parse_rollout_spec
from simulator.rollouts.validation import resolve_template, validate_rollout

__all__ = ["plan_rollout"]

BLUE_GREEN_PAUSE = "BlueGreenPause"
INCONCLUSIVE_PAUSE = "InconclusiveAnalysisRun"
INVALID_SPEC_RETRY = 20.0


def plan_rollout(rollout: Rollout, observed: Observed, now: float) -> Plan:
    return _Pass(rollout, observed, now).run()


def _deadline(rs: ReplicaSet) -> float | None:
    value = rs.metadata.annotations.get(ANNOTATION_DEADLINE)
    return parse_time(value) if value else None


class _Pass:
    def __init__(self, rollout: Rollout, observed: Observed, now: float) -> None:
        self.rollout = rollout
        self.obs = observed
        self.now = now
        spec, problems, _ = parse_rollout_spec(rollout.spec)
        self.spec: RolloutSpec = spec
        self.schema_problem = problems[0] if problems else None
        self.old: RolloutStatus = rollout.status.copy() if rollout.status else RolloutStatus()
        self.st = self.old.copy()
        self.rss: dict[str, ReplicaSet] = {rs.name: rs.clone() for rs in observed.replica_sets}
        self.services: dict[str, Service] = {n: s.clone() for n, s in observed.services.items()}
        self.plan = Plan(self.st)
        self.new_rs: ReplicaSet | None = None
        self.hash = ""
        self.created = False

    # --- plumbing ---------------------------------------------------------------------------------

    @property
    def bg(self) -> BlueGreenSpec:
        assert self.spec.blue_green is not None
        return self.spec.blue_green

    def act(self, action: Action) -> None:
        self.plan.actions.append(action)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.plan.events.append(Event(reason, message, warning))

    def requeue(self, when: float) -> None:
        if self.plan.requeue_at is None or when < self.plan.requeue_at:
            self.plan.requeue_at = when

    def rs_by_hash(self, pod_hash: str) -> ReplicaSet | None:
        return next((rs for rs in self.rss.values() if pod_hash and rs.pod_hash == pod_hash), None)

    @property
    def stable_rs(self) -> ReplicaSet | None:
        return self.rs_by_hash(self.st.stable_rs)

    def service_hash(self, name: str) -> str:
        service = self.services.get(name)
        return service.selector.get(HASH_LABEL, "") if service else ""

    def scale(self, rs: ReplicaSet, replicas: int) -> None:
        desired = str(self.spec.replicas)
        if rs.replicas == replicas and rs.metadata.annotations.get(ANNOTATION_DESIRED) == desired:
            return
        if rs.replicas != replicas:
            direction = "up" if replicas > rs.replicas else "down"
            self.event(
                "ScalingReplicaSet",
                f"Scaled {direction} ReplicaSet {rs.name} (revision {rs.revision}) from {rs.replicas} to {replicas}",
            )
        annotations: dict[str, str | None] = {ANNOTATION_DESIRED: desired}
        if replicas == 0 and ANNOTATION_DEADLINE in rs.metadata.annotations:
            annotations[ANNOTATION_DEADLINE] = None
        self.annotate(rs, annotations, replicas=replicas)

    def annotate(self, rs: ReplicaSet, annotations: Mapping[str, str | None], replicas: int | None = None) -> None:
        for key, value in annotations.items():
            if value is None:
                rs.metadata.annotations.pop(key, None)
            else:
                rs.metadata.annotations[key] = value
        if replicas is not None:
            rs.spec["replicas"] = replicas
        self.act(UpdateReplicaSet(rs.name, replicas=replicas, annotations=dict(annotations)))

    def switch_service(self, name: str, pod_hash: str) -> None:
        service = self.services.get(name)
        if service is None:
            return
        old = service.selector.get(HASH_LABEL, "")
        if old == pod_hash:
            return
        service.spec.setdefault("selector", {})[HASH_LABEL] = pod_hash
        self.act(SetServiceSelector(name, pod_hash, self.rollout.name))
        self.event("SwitchService", f"Switched selector for service '{name}' from '{old}' to '{pod_hash}'")

    # --- the pass ---------------------------------------------------------------------------------

    def run(self) -> Plan:
        self.st.observed_generation = self.rollout.metadata.generation
        problem = self.schema_problem or validate_rollout(
            self.rollout, self.spec, self.obs.services, self.obs.templates, self.obs.deployments
        )
        if problem:
            return self.invalid(problem)
        self.st.conditions = [c for c in self.st.conditions if c.type != "InvalidSpec"]
        template = resolve_template(self.spec, self.obs.deployments)
        assert template is not None
        self.hash = pod_template_hash(template)
        self.new_rs = self.rs_by_hash(self.hash)
        if self.scaling_event():
            return self.finish()
        self.sync_new_replica_set(template)
        inconclusive = self.old.pause_condition(INCONCLUSIVE_PAUSE) is not None
        if self.bg.preview_service and not self.spec.paused and not inconclusive:
            self.switch_service(self.bg.preview_service, self.hash)
        if self.old.current_pod_hash != self.hash:
            self.template_changed()
            return self.finish()
        if self.st.promote_full:
            self.st.pause_conditions = []
            self.st.abort = False
            self.st.abort_message = ""
        self.restart()
        self.reconcile_replica_sets()
        pause_added = self.reconcile_pause()
        self.reconcile_active_service(pause_added)
        self.reconcile_analysis()
        self.reconcile_ephemeral_metadata()
        return self.finish(pause_added=pause_added)

    def restart_pending(self) -> bool:
        at = self.spec.restart_at
        return at is not None and at <= self.now and (self.st.restarted_at is None or self.st.restarted_at < at)

    def restart(self) -> None:
        """Step 6 (`rollout/restart.go`): evict the pods created before `spec.restartAt`, stable ReplicaSet
        first, then the new one, then the others oldest first, one at a time and only while every pod of
        the Rollout is available (`maxUnavailable` is not simulated: 1); then `status.restartedAt`."""
        at = self.spec.restart_at
        if at is not None and at > self.now:
            self.requeue(at)
        if not self.restart_pending():
            return
        assert at is not None
        stable, new = self.stable_rs, self.new_rs
        others = sorted(
            (rs for rs in self.rss.values() if rs is not stable and rs is not new), key=lambda r: r.metadata.creation
        )
        order = [rs for rs in (stable, new, *others) if rs is not None and rs.replicas > 0]
        stale = [
            pod
            for rs in order
            for pod in sorted(self.obs.pods, key=lambda p: (p.metadata.creation, p.metadata.sequence))
            if pod.metadata.owner == f"ReplicaSet/{rs.name}" and pod.metadata.creation < at
        ]
        if not stale:
            self.st.restarted_at = at
            return
        min_ready = self.spec.min_ready_seconds
        available = Counter(p.metadata.owner for p in self.obs.pods if p.available(self.now, min_ready))
        if all(available[f"ReplicaSet/{rs.name}"] >= rs.replicas for rs in order):
            self.act(DeletePod(stale[0].name))
        self.requeue(self.now + 1.0)  # minReadySeconds passing is no store change

    def invalid(self, problem: str) -> Plan:
        message = f'The Rollout "{self.rollout.name}" is invalid: {problem}'
        self.st.set_condition("InvalidSpec", "True", "InvalidSpec", message, self.now)
        self.st.phase = Phase.DEGRADED
        self.st.message = f"InvalidSpec: {message}"
        self.requeue(self.now + INVALID_SPEC_RETRY)
        return self.plan

    def scaling_event(self) -> bool:
        """§2.15: spec.replicas changed since the new/stable RS were last sized; resize only, end the pass."""
        desired = str(self.spec.replicas)
        touched = [rs for rs in (self.new_rs, self.stable_rs) if rs is not None]
        if not any(ANNOTATION_DESIRED in rs.metadata.annotations for rs in touched):
            return False
        if all(rs.metadata.annotations.get(ANNOTATION_DESIRED, desired) == desired for rs in touched):
            return False
        stable = self.stable_rs
        if stable is not None:
            self.scale(stable, self.spec.replicas)
        if self.new_rs is not None and self.new_rs is not stable:
            self.scale(self.new_rs, self.new_target())
        for rs in self.rss.values():
            if rs not in touched and rs.replicas > 0 and ANNOTATION_DEADLINE in rs.metadata.annotations:
                self.scale(rs, self.spec.replicas)
        return True

    def sync_new_replica_set(self, template: dict[str, Any]) -> None:
        top = max((rs.revision for rs in self.rss.values()), default=0)
        if self.new_rs is None:
            self.new_rs = self.create_replica_set(template, top + 1)
            self.created = True
        elif self.new_rs.revision < top:
            # Reusing an older ReplicaSet makes it the newest revision; Argo keeps the old number too.
            rs = self.new_rs
            history = rs.metadata.annotations.get(ANNOTATION_REVISION_HISTORY)
            old = str(rs.revision)
            self.annotate(
                rs,
                {
                    ANNOTATION_REVISION: str(top + 1),
                    ANNOTATION_REVISION_HISTORY: f"{history},{old}" if history else old,
                },
            )

    def create_replica_set(self, template: dict[str, Any], revision: int) -> ReplicaSet:
        name = f"{self.rollout.name}-{self.hash}"
        meta_in = template.get("metadata")
        template_meta: dict[str, Any] = dict(meta_in) if isinstance(meta_in, dict) else {}
        labels = {str(k): str(v) for k, v in (template_meta.get("labels") or {}).items()}
        labels[HASH_LABEL] = self.hash
        ephemeral = self.bg.preview_metadata if self.st.stable_rs else self.bg.active_metadata
        selector = dict(self.spec.selector or labels)
        selector[HASH_LABEL] = self.hash
        annotations = {k: v for k, v in self.rollout.metadata.annotations.items() if not k.startswith("kubectl.")}
        annotations[ANNOTATION_REVISION] = str(revision)
        annotations[ANNOTATION_DESIRED] = str(self.spec.replicas)
        if ephemeral:
            annotations[ANNOTATION_EPHEMERAL] = json.dumps(
                {"labels": ephemeral.labels, "annotations": ephemeral.annotations}, sort_keys=True
            )
        rs = ReplicaSet(
            metadata=ObjectMeta(
                name=name,
                namespace=self.rollout.metadata.namespace,
                labels=labels,
                annotations=annotations,
                owner=f"Rollout/{self.rollout.name}",
            ),
            spec={
                "replicas": 0,
                "minReadySeconds": self.spec.min_ready_seconds,
                "selector": {"matchLabels": selector},
                "template": {**template, "metadata": {**template_meta, "labels": labels}},
            },
        )
        self.rss[name] = rs
        self.act(CreateReplicaSet(rs.clone()))
        self.event("RolloutUpdated", f"Rollout updated to revision {revision}")
        self.event("NewReplicaSetCreated", f"Created ReplicaSet {name} (revision {revision})")
        self.st.set_condition(
            "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{name}"', self.now
        )
        return rs

    def template_changed(self) -> None:
        """§2.2 step 3: a new pod template; reset the per-update state and latch fast-tracking."""
        st = self.st
        assert self.new_rs is not None
        st.current_pod_hash = self.hash
        st.pause_conditions = []
        st.controller_pause = False
        st.abort = False
        st.aborted_at = None
        st.abort_message = ""
        st.promote_full = False
        st.pre_promotion = None
        st.post_promotion = None
        st.scale_up_preview_checkpoint = False
        st.fast_track = ""
        stable = self.stable_rs
        if not st.stable_rs:
            st.stable_rs = self.hash
            self.completed("Initial deploy")
            return
        if self.old.current_pod_hash:
            self.event(
                "RolloutNotCompleted",
                f"Rollout not completed, started update to revision {self.new_rs.revision} ({self.hash})",
            )
        if stable is None or self.new_rs is stable or self.created:
            return
        if self.new_rs.metadata.created_before(stable.metadata):
            deadline = _deadline(self.new_rs)
            if deadline is not None and deadline > self.now:
                st.fast_track = "Fast rollback"
            elif self.spec.rollback_window:
                between = sum(
                    1
                    for rs in self.rss.values()
                    if self.new_rs.metadata.created_before(rs.metadata) and rs.metadata.created_before(stable.metadata)
                )
                if between < self.spec.rollback_window:
                    st.fast_track = "Rollback within window"

    def completed(self, reason: str) -> None:
        assert self.new_rs is not None
        self.event(
            "RolloutCompleted",
            f"Rollout completed update to revision {self.new_rs.revision} ({self.hash}): {reason}",
        )

    # --- ReplicaSets (§2.4, §2.8, §2.9, §2.10) ----------------------------------------------------

    def active_hash(self) -> str:
        return self.service_hash(self.bg.active_service)

    def new_target(self) -> int:
        n = self.spec.replicas
        p = self.bg.preview_replica_count
        active = self.active_hash()
        if p is None or active == self.hash or self.rs_by_hash(active) is None or self.st.promote_full:
            return n
        paused = self.spec.paused or bool(self.old.pause_conditions)
        if not paused and self.old.scale_up_preview_checkpoint:
            return n
        return p

    def abort_delay_running(self) -> bool:
        return self.st.abort and self.bg.abort_scale_down_delay_seconds > 0

    def reconcile_replica_sets(self) -> None:
        new, stable = self.new_rs, self.stable_rs
        assert new is not None
        if self.st.abort and self.st.stable_rs == self.hash:
            self.st.abort = False  # an abort of a fully promoted Rollout is ignored (§2.10)
        if not self.abort_delay_running() and ANNOTATION_DEADLINE in new.metadata.annotations:
            self.annotate(new, {ANNOTATION_DEADLINE: None})
        if stable is not None and stable is not new and ANNOTATION_DEADLINE in stable.metadata.annotations:
            self.annotate(stable, {ANNOTATION_DEADLINE: None})
        if stable is not None and stable is not new:
            self.scale(stable, self.spec.replicas)
        if self.st.abort:
            self.scale_down_aborted(new, stable)
        else:
            self.scale(new, self.new_target())
        self.scale_down_old()
        self.delete_history()

    def scale_down_aborted(self, new: ReplicaSet, stable: ReplicaSet | None) -> None:
        delay = self.bg.abort_scale_down_delay_seconds
        if delay == 0 or new is stable or new.replicas == 0:
            return
        if self.proxy_serves(self.bg.active_service) == new.pod_hash:
            return  # live traffic has not left it yet (the proxy refuses the flip back): keep it, no delay yet
        deadline = _deadline(new)
        if deadline is not None:
            if deadline <= self.now:
                self.scale(new, 0)
            else:
                self.requeue(deadline)
        elif stable is None or stable.status.available_replicas >= self.spec.replicas:
            self.annotate(new, {ANNOTATION_DEADLINE: format_time(self.now + delay)})
            self.requeue(self.now + delay)

    def proxy_serves(self, name: str) -> str | None:
        """What the proxy acknowledged serving for Service `name` (`bluegreen.dev/proxy-serves`, written by
        the binding): a pod-template hash, "" for none of ours, None when the Service drives no proxy."""
        service = self.services.get(name)
        return service.metadata.annotations.get(ANNOTATION_PROXY_SERVES) if service else None

    def targets_verified(self) -> bool:
        """Argo's `areTargetsVerified` (`rollout/service.go`, ALB target-group verification, §2.6): once the
        active Service selects the new ReplicaSet, the proxy must serve it too before the Rollout goes on
        (marks it stable, starts post-promotion analysis, lets the old ReplicaSet's delay start). Like Argo,
        verified only right after the switch: a Service bound to no proxy (no TargetGroupBinding), a promoted
        Rollout or a post-promotion run already started need nothing more."""
        served = self.proxy_serves(self.bg.active_service)
        if served is None or self.old.stable_rs == self.hash or self.old.post_promotion is not None:
            return True
        return served == self.active_hash()

    def referenced_hashes(self) -> set[str]:
        refs = {self.st.stable_rs, self.hash, self.old.active_selector, self.old.preview_selector}
        refs.add(self.active_hash())
        if self.bg.preview_service:
            refs.add(self.service_hash(self.bg.preview_service))
            # Not Argo: a ReplicaSet a proxy listener still serves is referenced, whatever the selectors say.
            refs.add(self.proxy_serves(self.bg.preview_service) or "")
        refs.add(self.proxy_serves(self.bg.active_service) or "")
        return refs - {""}

    def scale_down_old(self) -> None:
        if self.old.pause_condition(INCONCLUSIVE_PAUSE) is not None:
            return
        post = self.bg.post_promotion_analysis
        delay_set = "scaleDownDelaySeconds" in (self.rollout.spec.get("strategy") or {}).get("blueGreen", {})
        if post and post.templates and not delay_set and self.st.stable_rs != self.hash:
            status = self.old.post_promotion
            if status is None or status.status != AnalysisPhase.SUCCESSFUL:
                return
        referenced = self.referenced_hashes()
        limit = self.bg.scale_down_delay_revision_limit
        delay = self.bg.scale_down_delay_seconds
        counted = 0
        others = [rs for rs in self.rss.values() if rs is not self.new_rs and rs is not self.stable_rs]
        for rs in sorted(others, key=lambda r: r.revision, reverse=True):
            if rs.pod_hash in referenced or rs.replicas == 0:
                continue
            deadline = _deadline(rs)
            within_limit = limit is None or counted < limit
            if deadline is None:
                # Deliberate deviation (Argo #1992): a delay of 0 scales down at once instead of never.
                if delay == 0 or not within_limit:
                    self.scale(rs, 0)
                else:
                    counted += 1
                    self.annotate(rs, {ANNOTATION_DEADLINE: format_time(self.now + delay)})
                    self.requeue(self.now + delay)
            elif not within_limit or deadline <= self.now:
                self.scale(rs, 0)
            else:
                counted += 1
                self.scale(rs, self.spec.replicas)
                self.requeue(deadline)

    def delete_history(self) -> None:
        others = [rs for rs in self.rss.values() if rs is not self.new_rs and rs is not self.stable_rs]
        surplus = len(others) - self.spec.revision_history_limit
        if surplus <= 0:
            return
        idle = [rs for rs in others if rs.replicas == 0 and rs.status.replicas == 0]
        for rs in sorted(idle, key=lambda r: (r.metadata.creation, r.metadata.sequence))[:surplus]:
            del self.rss[rs.name]
            self.act(DeleteReplicaSet(rs.name))
            for run in self.obs.analysis_runs.values():
                if run.metadata.labels.get(HASH_LABEL) == rs.pod_hash:
                    self.act(TerminateAnalysisRun(run.name))

    # --- pause and promotion (§2.3, §2.6) ---------------------------------------------------------

    def saturated(self, rs: ReplicaSet) -> bool:
        n = self.spec.replicas
        return (
            rs.replicas == n
            and rs.status.available_replicas >= n
            and rs.metadata.annotations.get(ANNOTATION_DESIRED) == str(n)
        )

    def ready_for_pause(self, rs: ReplicaSet) -> bool:
        target = self.new_target()
        return rs.replicas == target and rs.status.available_replicas >= target

    def fast_tracked(self) -> bool:
        active = self.active_hash()
        return bool(self.st.fast_track) or self.st.promote_full or not active or active == self.hash

    def pre_analysis_ok(self, status: RolloutStatus) -> bool:
        pre = self.bg.pre_promotion_analysis
        if pre is None or not pre.templates:
            return True
        return status.pre_promotion is not None and status.pre_promotion.status == AnalysisPhase.SUCCESSFUL

    def pause_completed(self, pause_added: bool) -> bool:
        if pause_added:
            return False
        if self.old.scale_up_preview_checkpoint:
            return True
        condition = self.old.pause_condition(BLUE_GREEN_PAUSE)
        # A human `promote` (controllerPause left true, conditions cleared) completes any pause. Argo
        # restarts an autoPromotionSeconds countdown instead (§2.3 quirk); we follow its docs.
        resumed = self.old.controller_pause and condition is None
        if not self.bg.auto_promotion_enabled:
            return resumed
        if self.bg.auto_promotion_seconds == 0:
            return True
        if condition is not None:
            return self.now >= condition.start_time + self.bg.auto_promotion_seconds
        return resumed

    def reconcile_pause(self) -> bool:
        st, new = self.st, self.new_rs
        assert new is not None
        condition = st.pause_condition(BLUE_GREEN_PAUSE)
        if condition is not None:
            seconds = self.bg.auto_promotion_seconds
            if self.bg.auto_promotion_enabled and seconds > 0:
                if self.now >= condition.start_time + seconds:
                    st.pause_conditions = [p for p in st.pause_conditions if p.reason != BLUE_GREEN_PAUSE]
                else:
                    self.requeue(condition.start_time + seconds)
            return False
        add = (
            not st.abort
            and self.ready_for_pause(new)
            and not self.spec.paused
            and self.old.pause_condition(INCONCLUSIVE_PAUSE) is None
            and not self.fast_tracked()
            and not self.old.scale_up_preview_checkpoint
            and self.bg.wants_pause
            and self.pre_analysis_ok(self.old)
            and not self.old.controller_pause
        )
        if add:
            st.pause_conditions.append(PauseCondition(BLUE_GREEN_PAUSE, self.now))
            st.controller_pause = True
            self.event("RolloutPaused", f"Rollout is paused ({BLUE_GREEN_PAUSE})")
            if self.bg.auto_promotion_enabled and self.bg.auto_promotion_seconds > 0:
                self.requeue(self.now + self.bg.auto_promotion_seconds)
        return add

    def reconcile_active_service(self, pause_added: bool) -> None:
        if self.spec.paused or self.old.pause_condition(INCONCLUSIVE_PAUSE) is not None:
            return
        new = self.new_rs
        assert new is not None
        target = ""
        if self.st.abort:
            # Deliberately not gated on the new RS being ready (Argo is): an abort must restore live traffic.
            target = self.st.stable_rs
        elif self.ready_for_pause(new) and self.saturated(new):
            if self.fast_tracked() or (self.pause_completed(pause_added) and self.pre_analysis_ok(self.old)):
                target = self.hash
        if target and self.rs_by_hash(target) is not None:
            self.switch_service(self.bg.active_service, target)

    # --- analysis (§2.5, §2.7) --------------------------------------------------------------------

    def run_phase(self, status: RunStatus | None) -> tuple[AnalysisRun | None, AnalysisPhase | None]:
        if status is None:
            return None, None
        run = self.obs.analysis_runs.get(status.name)
        return run, (run.status.phase if run else None)

    def needs_new_run(self, status: RunStatus | None, old: RunStatus | None) -> bool:
        run, phase = self.run_phase(status)
        if run is None:
            return True
        resumed = self.old.pause_condition(INCONCLUSIVE_PAUSE) is None
        return phase == AnalysisPhase.INCONCLUSIVE and old is not None and old.status == "Inconclusive" and resumed

    def run_since(self, status: RunStatus | None, since: float) -> RunStatus | None:
        run = self.run_phase(status)[0]
        return status if run is not None and run.metadata.creation > since else None

    def run_name(self, suffix: str) -> str:
        assert self.new_rs is not None
        base = f"{self.rollout.name}-{self.hash}-{self.new_rs.revision}-{suffix}"
        name, n = base, 0
        while name in self.obs.analysis_runs:
            n += 1
            name = f"{base}.{n}"
        return name

    def terminate(self, status: RunStatus | None) -> None:
        run, phase = self.run_phase(status)
        if run is not None and phase is not None and not phase.completed and not run.spec.get("terminate"):
            self.act(TerminateAnalysisRun(run.name))

    def abort(self, message: str) -> None:
        st = self.st
        if st.abort:
            return
        st.abort = True
        st.abort_message = message

    def track_run(
        self, kind: str, analysis: RolloutAnalysis, current: RunStatus | None, can_create: bool
    ) -> RunStatus | None:
        """Create or follow one pre/post run; returns the new status entry and acts on its result."""
        assert self.new_rs is not None
        old = self.old.pre_promotion if kind == "PrePromotion" else self.old.post_promotion
        if self.needs_new_run(current, old):
            self.terminate(current)
            if not can_create:
                # Argo starts a retried run at once, even while the preview pods are still coming back
                # (§2.11); waiting for a saturated preview is what its docs promise.
                return None
            name = self.run_name("pre" if kind == "PrePromotion" else "post")
            args = self.resolve_args(analysis)
            self.act(CreateAnalysisRun(name, kind, self.hash, self.new_rs.revision, analysis, args))
            return RunStatus(name, "Pending")
        run, phase = self.run_phase(current)
        assert run is not None and phase is not None and current is not None
        status = RunStatus(current.name, str(phase), run.status.message)
        label = "Pre" if kind == "PrePromotion" else "Post"
        if old is None or old.status != status.status:
            previous = old.status if old else "NoPreviousStatus"
            self.event(
                f"AnalysisRun{phase}",
                f"{label}Promotion Analysis Run '{run.name}' Status New: '{phase}' Previous: '{previous}'",
                warning=phase in (AnalysisPhase.FAILED, AnalysisPhase.ERROR),
            )
        if phase in (AnalysisPhase.FAILED, AnalysisPhase.ERROR):
            detail = f": {run.status.message}" if run.status.message else ""
            self.abort(f"Blue/green {label.lower()}-promotion analysis phase error/failed{detail}")
        elif phase == AnalysisPhase.INCONCLUSIVE and (old is None or old.status != "Inconclusive"):
            if self.st.pause_condition(INCONCLUSIVE_PAUSE) is None:
                self.st.pause_conditions.append(PauseCondition(INCONCLUSIVE_PAUSE, self.now))
                self.st.controller_pause = True
        return status

    def resolve_args(self, analysis: RolloutAnalysis) -> dict[str, str]:
        out: dict[str, str] = {}
        for arg in analysis.args:
            if arg.value is not None:
                out[arg.name] = arg.value
            elif arg.pod_template_hash:
                out[arg.name] = self.hash if arg.pod_template_hash == "Latest" else self.st.stable_rs
            elif arg.field_path:
                out[arg.name] = self.field_value(arg.field_path)
        return out

    def field_value(self, path: str) -> str:
        meta = self.rollout.metadata
        simple = {"metadata.name": meta.name, "metadata.namespace": meta.namespace, "metadata.uid": meta.uid}
        if path in simple:
            return simple[path]
        for prefix, source in (("metadata.labels['", meta.labels), ("metadata.annotations['", meta.annotations)):
            if path.startswith(prefix) and path.endswith("']"):
                return source.get(path[len(prefix) : -2], "")
        value: object = self.rollout.to_json()
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return "" if value is None else str(value)

    def reconcile_analysis(self) -> None:
        st, bg = self.st, self.bg
        pre, post = bg.pre_promotion_analysis, bg.post_promotion_analysis
        active = self.active_hash()
        new = self.new_rs
        assert new is not None
        if self.old.aborted_at is not None and not self.old.abort:
            # The pass that sees a retry: runs from before the abort are stale (Argo's needsNewAnalysisRun).
            # Argo forgets this for the post-promotion run and re-aborts at once (#2824); we do not.
            st.pre_promotion = self.run_since(st.pre_promotion, self.old.aborted_at)
            st.post_promotion = self.run_since(st.post_promotion, self.old.aborted_at)
        skip_common = st.stable_rs == self.hash or bool(st.fast_track) or st.promote_full or st.abort
        if pre is None or not pre.templates or skip_common or active == self.hash or not active:
            self.terminate(st.pre_promotion)
        else:
            st.pre_promotion = self.track_run("PrePromotion", pre, st.pre_promotion, self.pre_saturated(new))
        if post is None or not post.templates or skip_common:
            self.terminate(st.post_promotion)
        elif active == self.hash and (st.post_promotion is not None or self.targets_verified()):
            # Argo's reconcilePostPromotionAnalysisRun: not before the switch is verified.
            st.post_promotion = self.track_run("PostPromotion", post, st.post_promotion, self.saturated(new))
        # Runs of earlier attempts or revisions that are still going are cancelled.
        current = {s.name for s in (st.pre_promotion, st.post_promotion) if s is not None}
        for run in self.obs.analysis_runs.values():
            if run.name not in current and not run.status.phase.completed and not run.spec.get("terminate"):
                self.act(TerminateAnalysisRun(run.name))
        if st.abort:
            self.terminate(st.pre_promotion)
            self.terminate(st.post_promotion)
        self.delete_old_runs(current)

    def delete_old_runs(self, current: set[str]) -> None:
        """`spec.analysis.*RunHistoryLimit`: completed runs beyond the limits go, oldest first."""
        done = [r for r in self.obs.analysis_runs.values() if r.status.phase.completed and r.name not in current]
        done.sort(key=lambda r: (r.metadata.creation, r.metadata.sequence), reverse=True)
        good = [r for r in done if r.status.phase == AnalysisPhase.SUCCESSFUL]
        bad = [r for r in done if r.status.phase != AnalysisPhase.SUCCESSFUL]
        surplus = good[self.spec.successful_run_history_limit :] + bad[self.spec.unsuccessful_run_history_limit :]
        for run in surplus:
            self.act(DeleteAnalysisRun(run.name))

    def pre_saturated(self, rs: ReplicaSet) -> bool:
        p = self.bg.preview_replica_count
        if p is not None:
            return rs.replicas == p and rs.status.available_replicas >= p
        return self.saturated(rs)

    # --- ephemeral metadata -----------------------------------------------------------------------

    def reconcile_ephemeral_metadata(self) -> None:
        for rs in self.rss.values():
            if rs.pod_hash == self.st.stable_rs:
                wanted = self.bg.active_metadata
            elif rs is self.new_rs:
                wanted = self.bg.preview_metadata
            else:
                wanted = None
            encoded = (
                json.dumps({"labels": wanted.labels, "annotations": wanted.annotations}, sort_keys=True)
                if wanted
                else None
            )
            if rs.metadata.annotations.get(ANNOTATION_EPHEMERAL) != encoded:
                rs.metadata.annotations.pop(ANNOTATION_EPHEMERAL, None)
                if encoded:
                    rs.metadata.annotations[ANNOTATION_EPHEMERAL] = encoded
                self.act(
                    UpdateReplicaSet(
                        rs.name,
                        annotations={ANNOTATION_EPHEMERAL: encoded},
                        ephemeral=wanted or EphemeralMetadata(),
                    )
                )

    # --- status (§3) ------------------------------------------------------------------------------

    def finish(self, pause_added: bool = False) -> Plan:
        st, new = self.st, self.new_rs
        assert new is not None
        bg = self.bg
        st.active_selector = self.active_hash()
        st.preview_selector = self.service_hash(bg.preview_service) if bg.preview_service else ""
        self.mark_stable()
        if st.abort:
            if st.aborted_at is None:
                st.aborted_at = self.now
                st.completion = "Aborted"
                detail = f": {st.abort_message}" if st.abort_message else ""
                self.event("RolloutAborted", f"Rollout aborted update to revision {new.revision}{detail}", True)
            st.pause_conditions = []
            st.controller_pause = False
        else:
            st.aborted_at = None
            st.abort_message = ""
            if not st.pause_conditions and not pause_added:
                st.controller_pause = False
        self.checkpoint()
        self.counters()
        self.conditions()
        self.phase()
        self.scale_down_workload()
        return self.plan

    def scale_down_workload(self) -> None:
        """workloadRef: record the generation seen; shrink the Deployment as `scaleDown` asks."""
        name = self.spec.workload_ref
        deployment = self.obs.deployments.get(name) if name else None
        self.st.workload_observed_generation = str(deployment.metadata.generation) if deployment else ""
        if deployment is None or self.spec.workload_scale_down == "never":
            return
        current = int(deployment.spec.get("replicas", 1))
        if self.spec.workload_scale_down == "onsuccess":
            target = 0 if self.st.phase == Phase.HEALTHY else current
        else:  # progressively: one Deployment pod fewer for every available Rollout pod, never back up
            target = max(0, min(current, self.spec.replicas - self.st.available_replicas))
        if target != current:
            self.act(ScaleDeployment(deployment.name, target))

    def mark_stable(self) -> None:
        st, bg = self.st, self.bg
        if st.active_selector != self.hash or st.stable_rs == self.hash:
            return
        if not self.targets_verified():
            # Argo's shouldFullPromote: "active selector is pointing to desired RS, but we have not verify the
            # target group yet". The old stable ReplicaSet stays stable and at full size meanwhile; its
            # scale-down deadline is written once it is no longer stable, so the delay counts from here.
            return
        post = bg.post_promotion_analysis
        post_ok = (
            post is None
            or not post.templates
            or (st.post_promotion is not None and st.post_promotion.status == AnalysisPhase.SUCCESSFUL)
        )
        if st.promote_full:
            reason, completion = "Full promotion requested", "FastPromoted"
        elif st.fast_track:
            reason, completion = st.fast_track, "FastRolledBack"
        elif not st.abort and post_ok:
            reason, completion = "Completed blue-green update", "Promoted"
        else:
            return
        st.stable_rs = self.hash
        st.pause_conditions = []
        st.controller_pause = False
        st.abort = False
        st.promote_full = False
        st.scale_up_preview_checkpoint = False
        st.fast_track = ""
        st.completion = completion
        self.completed(reason)

    def checkpoint(self) -> None:
        st, new = self.st, self.new_rs
        p = self.bg.preview_replica_count
        if p is None or new is None or st.scale_up_preview_checkpoint or st.stable_rs == self.hash or st.abort:
            return
        if st.pause_conditions or self.spec.paused:
            return
        if not self.pre_analysis_ok(st) or not self.pause_completed(False):
            return
        if new.replicas == p and new.status.available_replicas >= p:
            st.scale_up_preview_checkpoint = True

    def counters(self) -> None:
        st, new = self.st, self.new_rs
        assert new is not None
        rss = list(self.rss.values())
        active = self.rs_by_hash(st.active_selector)
        counted = [active] if active is not None else rss
        st.replicas = sum(rs.status.replicas for rs in rss)
        st.updated_replicas = new.status.replicas
        st.ready_replicas = sum(rs.status.ready_replicas for rs in counted)
        st.available_replicas = sum(rs.status.available_replicas for rs in counted)
        st.hpa_replicas = active.status.replicas if active else 0
        selector = dict(self.spec.selector)
        if active is not None:
            selector[HASH_LABEL] = active.pod_hash
        st.selector = ",".join(f"{k}={v}" for k, v in selector.items())

    def progressed(self) -> bool:
        old, st = self.old, self.st
        keys = ("updated_replicas", "replicas", "ready_replicas", "available_replicas")
        return (
            any(getattr(old, k) != getattr(st, k) for k in keys)
            or old.active_selector != st.active_selector
            or old.preview_selector != st.preview_selector
        )

    def conditions(self) -> None:
        st, new, now = self.st, self.new_rs, self.now
        assert new is not None
        n = self.spec.replicas
        paused = self.spec.paused or bool(st.pause_conditions)
        if paused:
            st.set_condition("Paused", "True", "RolloutPaused", "Rollout is paused", now)
        elif st.condition("Paused") is not None:
            st.set_condition("Paused", "False", "RolloutPaused", "Rollout is paused", now)
        complete = st.stable_rs == self.hash == st.active_selector
        healthy_counts = st.updated_replicas == n and st.available_replicas == n
        progressing = st.condition("Progressing")
        rs_name = new.name
        if st.abort:
            detail = f": {st.abort_message}" if st.abort_message else ""
            message = f"Rollout aborted update to revision {new.revision}{detail}"
            st.set_condition("Progressing", "False", "RolloutAborted", message, now)
        elif paused:
            st.set_condition("Progressing", "Unknown", "RolloutPaused", "Rollout is paused", now)
        elif self.old.aborted_at is not None and not self.old.abort:
            st.set_condition("Progressing", "Unknown", "RolloutRetry", "Retrying Rollout after abort", now)
        elif complete and healthy_counts:
            message = f'ReplicaSet "{rs_name}" has successfully progressed.'
            st.set_condition("Progressing", "True", "NewReplicaSetAvailable", message, now)
        elif (
            self.progressed()
            or self.old.current_pod_hash != self.hash
            or (progressing is not None and progressing.reason in ("RolloutPaused", "RolloutRetry", "RolloutAborted"))
        ):
            message = f'ReplicaSet "{rs_name}" is progressing.'
            st.set_condition("Progressing", "True", "ReplicaSetUpdated", message, now, touch=True)
        elif progressing is None:
            st.set_condition("Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', now)
        self.progress_deadline(complete, paused)
        active = self.rs_by_hash(st.active_selector)
        if active is not None and active.status.available_replicas >= n:
            st.set_condition("Available", "True", "AvailableReason", "Rollout has minimum availability", now)
        else:
            st.set_condition("Available", "False", "AvailableReason", "Rollout does not have minimum availability", now)
        if complete:
            st.set_condition("Completed", "True", "RolloutCompleted", "Rollout completed update to revision", now)
        else:
            st.set_condition("Completed", "False", "RolloutCompleted", "Rollout not completed", now)
        preview_ok = not self.bg.preview_service or st.preview_selector == self.hash
        if not paused and healthy_counts and st.active_selector == self.hash and preview_ok and complete:
            st.set_condition("Healthy", "True", "RolloutHealthy", "Rollout is healthy", now)
        else:
            st.set_condition("Healthy", "False", "RolloutHealthy", "Rollout is not healthy", now)

    def progress_deadline(self, complete: bool, paused: bool) -> None:
        st, new = self.st, self.new_rs
        assert new is not None
        progressing = st.condition("Progressing")
        if progressing is None or paused or st.abort:
            return
        timed_out = progressing.reason == "ProgressDeadlineExceeded"
        if not timed_out:
            if progressing.status != "True" or (complete and progressing.reason == "NewReplicaSetAvailable"):
                return
            if any(ANNOTATION_DEADLINE in rs.metadata.annotations and rs.replicas > 0 for rs in self.rss.values()):
                return  # an old ReplicaSet waiting for its scale-down is not a stalled update
            deadline = progressing.last_update + self.spec.progress_deadline_seconds
            if self.now < deadline:
                self.requeue(deadline)
                return
            message = f'ReplicaSet "{new.name}" has timed out progressing.'
            st.set_condition("Progressing", "False", "ProgressDeadlineExceeded", message, self.now)
            timed_out = True
        if timed_out and self.spec.progress_deadline_abort and st.stable_rs != self.hash:
            self.abort(f'ReplicaSet "{new.name}" has timed out progressing.')
            # The abort takes effect now: status shows it and the next pass moves traffic back.
            self.finish_abort_now()

    def finish_abort_now(self) -> None:
        st, new = self.st, self.new_rs
        assert new is not None
        st.aborted_at = self.now
        st.completion = "Aborted"
        st.pause_conditions = []
        st.controller_pause = False
        self.event("RolloutAborted", f"Rollout aborted update to revision {new.revision}: {st.abort_message}", True)
        message = f"Rollout aborted update to revision {new.revision}: {st.abort_message}"
        st.set_condition("Progressing", "False", "RolloutAborted", message, self.now)

    def phase(self) -> None:
        st = self.st
        n = self.spec.replicas
        progressing = st.condition("Progressing")
        if progressing is not None and progressing.reason in ("RolloutAborted", "ProgressDeadlineExceeded"):
            st.phase, st.message = Phase.DEGRADED, f"{progressing.reason}: {progressing.message}"
        elif self.spec.paused:
            st.phase, st.message = Phase.PAUSED, "manually paused"
        elif st.pause_conditions:
            st.phase, st.message = Phase.PAUSED, st.pause_conditions[0].reason
        elif self.restart_pending():
            st.phase, st.message = Phase.PROGRESSING, "rollout is restarting"
        elif st.updated_replicas < n:
            st.phase, st.message = Phase.PROGRESSING, "more replicas need to be updated"
        elif st.available_replicas < st.updated_replicas:
            st.phase, st.message = Phase.PROGRESSING, "updated replicas are still becoming available"
        elif not st.active_selector or st.active_selector != self.hash:
            st.phase, st.message = Phase.PROGRESSING, "active service cutover pending"
        elif st.stable_rs != self.hash:
            post = self.bg.post_promotion_analysis
            if post and post.templates:
                st.phase, st.message = Phase.PROGRESSING, "waiting for analysis to complete"
            else:
                st.phase, st.message = Phase.PROGRESSING, "waiting for post-promotion verification to complete"
        else:
            st.phase, st.message = Phase.HEALTHY, ""

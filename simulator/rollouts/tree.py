"""`kubectl argo rollouts get rollout` output: the header block and the revision tree (spec §5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simulator.k8s.clock import parse_time
from simulator.k8s.objects import ANNOTATION_DEADLINE, AnalysisRun, Pod, ReplicaSet, Rollout
from simulator.k8s.rollout_status import RolloutStatus

__all__ = ["RolloutView", "client_phase", "human_duration", "render"]

ICONS = {
    "Healthy": "✔",
    "Successful": "✔",
    "Running": "✔",
    "Progressing": "◌",
    "Pending": "◷",
    "ContainerCreating": "◌",
    "Terminating": "◌",
    "Paused": "॥",
    "Degraded": "✖",
    "Failed": "✖",
    "CrashLoopBackOff": "✖",
    "Error": "⚠",
    "ImagePullBackOff": "⚠",
    "ErrImagePull": "⚠",
    "InvalidSpec": "⚠",
    "Inconclusive": "?",
    "Unknown": "?",
    "ScaledDown": "•",
}
GREEN, BLUE, RESET = "\x1b[32m", "\x1b[34m", "\x1b[0m"


@dataclass
class RolloutView:
    rollout: Rollout
    replica_sets: Sequence[ReplicaSet]
    pods: Sequence[Pod]
    runs: Sequence[AnalysisRun]


def human_duration(seconds: float) -> str:
    """Kubernetes' HumanDuration: `8s`, `3m20s`, `42m`, `3h59m`, `2d4h`, `7d`."""
    s = int(seconds)
    if s < 0:
        s = 0
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y"


def client_phase(rollout: Rollout) -> tuple[str, str]:
    """Phase and message as the CLI shows them, with Argo's client-side overrides (§3.2)."""
    status = rollout.status
    if status is None:
        return "Progressing", "waiting for rollout spec update to be observed"
    if status.observed_generation < rollout.metadata.generation:
        return "Progressing", "waiting for rollout spec update to be observed"
    if status.controller_pause and not status.pause_conditions and status.phase == "Paused":
        return "Progressing", "waiting for rollout to unpause"
    if status.message.startswith("InvalidSpec"):
        return "Degraded", status.message
    return str(status.phase), status.message


def _images(rs: ReplicaSet) -> list[str]:
    containers = ((rs.spec.get("template") or {}).get("spec") or {}).get("containers") or []
    return [str(c.get("image", "")) for c in containers]


def _rs_tags(rs: ReplicaSet, status: RolloutStatus) -> list[str]:
    tags = []
    if rs.pod_hash == status.stable_rs:
        tags.append("stable")
    if rs.pod_hash == status.active_selector:
        tags.append("active")
    elif rs.pod_hash == status.preview_selector:
        tags.append("preview")
    return tags


def _rs_status(rs: ReplicaSet) -> str:
    if rs.replicas == 0:
        return "ScaledDown"
    return "Healthy" if rs.status.available_replicas >= rs.replicas else "Progressing"


def _pod_status(pod: Pod) -> str:
    return pod.status.reason or pod.status.phase


def _icon(status: str, pod_ready: bool = True) -> str:
    icon = ICONS.get(status, "?")
    return "◌" if status == "Running" and not pod_ready else icon


def _colored(text: str, tag: str, color: bool) -> str:
    if not color:
        return text
    return f"{GREEN if tag in ('stable', 'active') else BLUE}{text}{RESET}"


def render(view: RolloutView, now: float, *, color: bool = False) -> str:
    ro = view.rollout
    status = ro.status or RolloutStatus()
    phase, message = client_phase(ro)
    lines = [f"{'Name:':<17}{ro.name}", f"{'Namespace:':<17}{ro.metadata.namespace}"]
    lines.append(f"{'Status:':<17}{ICONS.get(phase, '?')} {phase}")
    if message:
        lines.append(f"{'Message:':<17}{message}")
    lines.append(f"{'Strategy:':<17}BlueGreen")
    images: dict[str, list[str]] = {}
    for rs in view.replica_sets:
        if rs.status.replicas > 0:
            for image in _images(rs):
                tags = images.setdefault(image, [])
                tags += [t for t in _rs_tags(rs, status) if t not in tags]
    for i, (image, tags) in enumerate(sorted(images.items())):
        ordered = tags if len([r for r in view.replica_sets if image in _images(r)]) == 1 else sorted(tags)
        label = "Images:" if i == 0 else ""
        suffix = f" ({', '.join(_colored(t, t, color) for t in ordered)})" if ordered else ""
        lines.append(f"{label:<17}{image}{suffix}")
    lines.append("Replicas:")
    desired = ro.spec.get("replicas", 1)
    for label, value in (
        ("Desired:", desired),
        ("Current:", status.replicas),
        ("Updated:", status.updated_replicas),
        ("Ready:", status.ready_replicas),
        ("Available:", status.available_replicas),
    ):
        lines.append(f"  {label:<15}{value}")
    lines.append("")
    lines += _tree(view, status, phase, now, color)
    return "\n".join(lines)


def _tree(view: RolloutView, status: RolloutStatus, phase: str, now: float, color: bool) -> list[str]:
    ro = view.rollout
    rows: list[tuple[str, str, str, str, str]] = [("NAME", "KIND", "STATUS", "AGE", "INFO")]
    rows.append(
        (f"⟳ {ro.name}", "Rollout", f"{ICONS.get(phase, '?')} {phase}", human_duration(now - ro.metadata.creation), "")
    )
    by_revision: dict[int, list[ReplicaSet | AnalysisRun]] = {}
    for rs in view.replica_sets:
        by_revision.setdefault(rs.revision, []).append(rs)
    for run in view.runs:
        revision = int(run.metadata.annotations.get("rollout.argoproj.io/revision", "0"))
        by_revision.setdefault(revision, []).append(run)
    revisions = sorted(by_revision, reverse=True)
    for r_index, revision in enumerate(revisions):
        last_revision = r_index == len(revisions) - 1
        rows.append((f"{'└──' if last_revision else '├──'}# revision:{revision}", "", "", "", ""))
        trunk = "   " if last_revision else "│  "
        children = sorted(by_revision[revision], key=lambda o: (o.kind != "ReplicaSet", o.metadata.creation))
        for c_index, child in enumerate(children):
            last_child = c_index == len(children) - 1
            branch = trunk + ("└──" if last_child else "├──")
            under = trunk + ("   " if last_child else "│  ")
            age = human_duration(now - child.metadata.creation)
            if isinstance(child, ReplicaSet):
                rows.append(_rs_row(child, status, branch, age, now, color))
                pods = sorted(
                    (p for p in view.pods if p.metadata.owner == f"ReplicaSet/{child.name}"),
                    key=lambda p: (p.metadata.creation, p.name),
                )
                for p_index, pod in enumerate(pods):
                    prefix = under + ("└──" if p_index == len(pods) - 1 else "├──")
                    pod_status = _pod_status(pod)
                    info = f"ready:{1 if pod.status.ready else 0}/1"
                    if pod.status.restarts:
                        info += f",restarts:{pod.status.restarts}"
                    rows.append(
                        (
                            f"{prefix}□ {pod.name}",
                            "Pod",
                            f"{_icon(pod_status, pod.status.ready)} {pod_status}",
                            human_duration(now - pod.metadata.creation),
                            info,
                        )
                    )
            else:
                rows.append(_run_row(child, branch, age))
                jobs = _jobs(child, now)
                for j_index, (job, job_phase, job_age) in enumerate(jobs):
                    prefix = under + ("└──" if j_index == len(jobs) - 1 else "├──")
                    rows.append((f"{prefix}⊞ {job}", "Job", f"{ICONS.get(job_phase, '?')} {job_phase}", job_age, ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        ("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]).rstrip() for row in rows
    ]


def _rs_row(
    rs: ReplicaSet, status: RolloutStatus, prefix: str, age: str, now: float, color: bool
) -> tuple[str, str, str, str, str]:
    rs_status = _rs_status(rs)
    info = [_colored(t, t, color) for t in _rs_tags(rs, status)]
    deadline = rs.metadata.annotations.get(ANNOTATION_DEADLINE)
    if deadline:
        remaining = parse_time(deadline) - now
        info.append(f"delay:{human_duration(remaining)}" if remaining > 0 else "delay:passed")
    return (f"{prefix}⧉ {rs.name}", "ReplicaSet", f"{ICONS[rs_status]} {rs_status}", age, ",".join(info))


def _jobs(run: AnalysisRun, now: float) -> list[tuple[str, str, str]]:
    """The job provider's Jobs of a run: finished ones from measurements, plus the one running."""
    jobs = []
    for m in run.status.metric_results:
        for measurement in m.measurements:
            if measurement.job:
                jobs.append((measurement.job, str(measurement.phase), human_duration(now - measurement.started_at)))
        if m.job:
            jobs.append((m.job, "Running", human_duration(now - m.job_started_at)))
    return jobs


def _run_row(run: AnalysisRun, prefix: str, age: str) -> tuple[str, str, str, str, str]:
    phase = str(run.status.phase)
    totals = {"✔": 0, "✖": 0, "?": 0, "⚠": 0}
    for m in run.status.metric_results:
        totals["✔"] += m.successful
        totals["✖"] += m.failed
        totals["?"] += m.inconclusive
        totals["⚠"] += m.error
    info = ",".join(f"{icon} {n}" for icon, n in totals.items() if n)
    return (f"{prefix}α {run.name}", "AnalysisRun", f"{ICONS.get(phase, '?')} {phase}", age, info)

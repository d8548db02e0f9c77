"""The AnalysisRun controller: takes measurements on schedule and turns them into phases (spec §4).

Each metric is measured after `initialDelay`, then every `interval`, `count` times (errors do not
count). A measurement's phase comes from its success/failure conditions; a metric's phase from its
counters and limits; the run's phase is its worst metric (dry-run metrics excluded). Web requests and
Prometheus queries run inline on virtual time and as background tasks on real time, so a slow pod never
stalls the cluster.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

from simulator.analysis.expr import ExprError, evaluate_condition
from simulator.analysis.fetch import Fetcher, FetchError, Request
from simulator.analysis.jobs import JobError, plan_job
from simulator.analysis.prometheus import DEFAULT_TIMEOUT, PrometheusClient, PrometheusError
from simulator.analysis.spec import Metric, RunSpecError, parse_metric
from simulator.k8s.jsonpath import JsonPathError, select
from simulator.k8s.objects import AnalysisPhase, AnalysisRun, Measurement, MetricResult
from simulator.k8s.store import Store

__all__ = ["AnalysisController", "measurement_phase", "metric_phase"]

ERROR_RETRY = 10.0
_WORST = [
    AnalysisPhase.SUCCESSFUL,
    AnalysisPhase.RUNNING,
    AnalysisPhase.PENDING,
    AnalysisPhase.INCONCLUSIVE,
    AnalysisPhase.ERROR,
    AnalysisPhase.FAILED,
]


def measurement_phase(metric: Metric, result: Any) -> AnalysisPhase:
    """Argo's evaluate.go: no conditions => Successful; a failing expression raises ExprError."""
    success = evaluate_condition(metric.success_condition, result) if metric.success_condition else None
    failure = evaluate_condition(metric.failure_condition, result) if metric.failure_condition else None
    if success is None and failure is None:
        return AnalysisPhase.SUCCESSFUL
    if failure is None:
        return AnalysisPhase.SUCCESSFUL if success else AnalysisPhase.FAILED
    if success is None:
        return AnalysisPhase.FAILED if failure else AnalysisPhase.SUCCESSFUL
    if failure:
        return AnalysisPhase.FAILED
    return AnalysisPhase.SUCCESSFUL if success else AnalysisPhase.INCONCLUSIVE


def metric_phase(metric: Metric, m: MetricResult) -> tuple[AnalysisPhase, str]:
    phase, message = AnalysisPhase.RUNNING, ""
    if metric.failure_limit >= 0 and m.failed > metric.failure_limit:
        phase = AnalysisPhase.FAILED
        message = f"failed ({m.failed}) > failureLimit ({metric.failure_limit})"
    if metric.inconclusive_limit >= 0 and m.inconclusive > metric.inconclusive_limit:
        phase = AnalysisPhase.INCONCLUSIVE
        message = f"inconclusive ({m.inconclusive}) > inconclusiveLimit ({metric.inconclusive_limit})"
    if metric.consecutive_error_limit >= 0 and m.consecutive_error > metric.consecutive_error_limit:
        phase = AnalysisPhase.ERROR
        message = (
            f"consecutiveErrors ({m.consecutive_error}) > consecutiveErrorLimit ({metric.consecutive_error_limit})"
        )
    if phase != AnalysisPhase.RUNNING:
        return phase, message
    if metric.consecutive_success_limit > 0 and m.consecutive_success >= metric.consecutive_success_limit:
        return AnalysisPhase.SUCCESSFUL, ""
    count = metric.effective_count
    if count is not None and m.count >= count:
        if metric.consecutive_success_limit > 0 and metric.failure_limit >= 0:
            return AnalysisPhase.INCONCLUSIVE, "count reached without consecutiveSuccessLimit"
        return AnalysisPhase.SUCCESSFUL, ""
    return AnalysisPhase.RUNNING, ""


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class AnalysisController:
    def __init__(
        self,
        store: Store,
        fetcher: Fetcher,
        rng: random.Random,
        *,
        virtual: bool,
        wake: Callable[[], None],
        prometheus: PrometheusClient | None = None,
    ) -> None:
        self._store = store
        self._fetcher = fetcher
        self.prometheus = prometheus if prometheus is not None else PrometheusClient()
        self._rng = rng
        self._virtual = virtual
        self._wake = wake
        self._inflight: dict[tuple[str, str], asyncio.Task[Measurement]] = {}

    async def close(self) -> None:
        for task in self._inflight.values():
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)
        self._inflight.clear()
        await self.prometheus.close()

    async def sync(self, now: float) -> list[float]:
        wakeups: list[float] = []
        for run in self._store.list(AnalysisRun):
            if run.status.phase.completed:
                continue
            before = run.status.to_json(), [(m.next_at, m.job_finish_at) for m in run.status.metric_results]
            await self._sync_run(run, now, wakeups)
            after = run.status.to_json(), [(m.next_at, m.job_finish_at) for m in run.status.metric_results]
            if after != before:
                self._store.update(run)
        return wakeups

    async def _sync_run(self, run: AnalysisRun, now: float, wakeups: list[float]) -> None:
        st = run.status
        try:
            metrics = [parse_metric(raw) for raw in run.spec.get("metrics") or []]
        except RunSpecError as exc:
            st.phase, st.message = AnalysisPhase.ERROR, str(exc)
            return
        dry = {d.get("metricName") for d in run.spec.get("dryRun") or []}
        if st.started_at is None:
            st.started_at = now
            st.phase = AnalysisPhase.RUNNING
            st.metric_results = [
                MetricResult(m.name, dry_run=m.name in dry or ".*" in dry, next_at=now + m.initial_delay)
                for m in metrics
            ]
        terminate = bool(run.spec.get("terminate"))
        for metric in metrics:
            result = st.metric(metric.name)
            assert result is not None
            if result.phase.completed:
                continue
            if not terminate:
                await self._measure(run, metric, result, now, wakeups)
            result.phase, result.message = metric_phase(metric, result)
        self._run_phase(run, metrics, terminate)

    def _run_phase(self, run: AnalysisRun, metrics: list[Metric], terminate: bool) -> None:
        st = run.status
        counted = [m for m in st.metric_results if not m.dry_run]
        bad = [m for m in counted if m.phase in (AnalysisPhase.FAILED, AnalysisPhase.ERROR, AnalysisPhase.INCONCLUSIVE)]
        if bad or terminate or all(m.phase.completed for m in st.metric_results):
            # One bad metric ends the run; a terminated run is Successful unless something already failed.
            worst = max((m.phase for m in counted), key=_WORST.index, default=AnalysisPhase.SUCCESSFUL)
            if worst in (AnalysisPhase.RUNNING, AnalysisPhase.PENDING):
                worst = AnalysisPhase.SUCCESSFUL
            st.phase = worst
            first_bad = next((m for m in counted if m.phase == worst and m.message), None)
            if first_bad is not None:
                st.message = f'Metric "{first_bad.name}" assessed {worst} due to {first_bad.message}'
            elif terminate:
                st.message = "Run Terminated"
            for m in st.metric_results:
                m.next_at = None
                if not m.phase.completed:
                    m.phase = AnalysisPhase.SUCCESSFUL if terminate else m.phase
            for key in [k for k in self._inflight if k[0] == run.name]:
                self._inflight.pop(key).cancel()

    async def _measure(
        self, run: AnalysisRun, metric: Metric, result: MetricResult, now: float, wakeups: list[float]
    ) -> None:
        key = (run.name, metric.name)
        task = self._inflight.get(key)
        if task is not None:
            if not task.done():
                return
            del self._inflight[key]
            self._record(metric, result, task.result(), now)
        if result.job_finish_at is not None:
            if now < result.job_finish_at:
                wakeups.append(result.job_finish_at)
                return
            self._finish_job(metric, result, now)
        if result.next_at is None or now < result.next_at:
            if result.next_at is not None:
                wakeups.append(result.next_at)
            return
        count = metric.effective_count
        if count is not None and result.count >= count:
            return
        result.next_at = None
        if metric.provider == "job":
            self._start_job(run, metric, result, now, wakeups)
        elif metric.provider in ("web", "prometheus"):
            measure = self._web if metric.provider == "web" else self._prometheus
            if self._virtual:
                self._record(metric, result, await measure(metric, now), now)
            else:
                self._inflight[key] = asyncio.create_task(measure(metric, now))
                self._inflight[key].add_done_callback(lambda _: self._wake())
        else:
            message = f"provider {metric.provider!r} is not implemented by the simulator"
            self._record(metric, result, Measurement(AnalysisPhase.ERROR, now, now, message=message), now)

    def _start_job(
        self, run: AnalysisRun, metric: Metric, result: MetricResult, now: float, wakeups: list[float]
    ) -> None:
        n = result.count + result.error + 1
        name = f"{run.metadata.uid}.{metric.name}.{n}"
        try:
            plan = plan_job(metric.provider_spec.get("spec") or {}, self._rng)
        except JobError as exc:
            self._record(metric, result, Measurement(AnalysisPhase.ERROR, now, now, message=str(exc)), now)
            return
        result.job, result.job_started_at = name, now
        result.job_finish_at = now + plan.duration
        result.job_exit_code = plan.exit_code
        if plan.duration > 0:
            wakeups.append(result.job_finish_at)
        else:
            self._finish_job(metric, result, now)

    def _finish_job(self, metric: Metric, result: MetricResult, now: float) -> None:
        """A Job that completed counts as Successful, one that failed as Failed (Argo's job provider)."""
        code = result.job_exit_code
        phase = AnalysisPhase.SUCCESSFUL if code == 0 else AnalysisPhase.FAILED
        message = "" if code == 0 else f"Job {result.job} failed: exit code {code}"
        measurement = Measurement(phase, result.job_started_at, now, message=message, job=result.job)
        self._record(metric, result, measurement, now)
        result.job, result.job_finish_at = "", None

    async def _web(self, metric: Metric, now: float) -> Measurement:
        web = metric.provider_spec
        method = str(web.get("method") or "GET").upper()
        headers = {str(h.get("key")): str(h.get("value", "")) for h in web.get("headers") or []}
        body: bytes | None = None
        if web.get("jsonBody") is not None:
            body = json.dumps(web["jsonBody"]).encode()
            headers.setdefault("Content-Type", "application/json")
        elif web.get("body") is not None:
            body = str(web["body"]).encode()
        timeout = float(web.get("timeoutSeconds") or 10)
        try:
            response = await self._fetcher.fetch(Request(method, str(web.get("url", "")), headers, body, timeout))
            if not 200 <= response.status < 300:
                raise FetchError(f"received non 2xx response code: {response.status}")
            text = response.body.decode("utf-8", "replace")
            try:
                document: Any = json.loads(text)
            except ValueError:
                value: Any = text
            else:
                value = select(document, str(web.get("jsonPath") or "{$}"))
            phase = measurement_phase(metric, value)
        except (FetchError, JsonPathError, ExprError) as exc:
            return Measurement(AnalysisPhase.ERROR, now, now, message=str(exc))
        return Measurement(phase, now, now, value=_value_text(value))

    async def _prometheus(self, metric: Metric, now: float) -> Measurement:
        """One instant query; `result` is a float (scalar) or a list of floats (vector), as in Argo."""
        spec = metric.provider_spec
        headers = {str(h.get("key")): str(h.get("value", "")) for h in spec.get("headers") or []}
        try:
            timeout = float(spec["timeout"]) if spec.get("timeout") is not None else DEFAULT_TIMEOUT
            answer = await self.prometheus.query(
                str(spec.get("address") or ""), str(spec.get("query") or ""), timeout_seconds=timeout, headers=headers
            )
            phase = measurement_phase(metric, answer.value)
        except (PrometheusError, ExprError, ValueError) as exc:
            return Measurement(AnalysisPhase.ERROR, now, now, message=str(exc))
        return Measurement(phase, now, now, value=answer.text)

    def _record(self, metric: Metric, result: MetricResult, measurement: Measurement, now: float) -> None:
        result.measurements = [*result.measurements, measurement][-10:]
        phase = measurement.phase
        if phase == AnalysisPhase.ERROR:
            result.error += 1
            result.consecutive_error += 1
            result.consecutive_success = 0
            result.next_at = now + (metric.interval or ERROR_RETRY)
            return
        result.consecutive_error = 0
        result.count += 1
        if phase == AnalysisPhase.SUCCESSFUL:
            result.successful += 1
            result.consecutive_success += 1
        else:
            result.consecutive_success = 0
            if phase == AnalysisPhase.FAILED:
                result.failed += 1
            else:
                result.inconclusive += 1
        count = metric.effective_count
        if count is None or result.count < count:
            result.next_at = now + (metric.interval or 0.0)

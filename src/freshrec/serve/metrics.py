"""The service's Prometheus metrics: a tiny thread-safe registry (`Metrics`) and the metrics
the service declares (`service_metrics`)."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
EDIT_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
MAX_SERIES = 1000  # label sets per metric; more are counted under {series="overflow"}
OVERFLOW = (("series", "overflow"),)


class Metrics:
    """A tiny thread-safe Prometheus registry: counters, gauges and histograms with labels."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._meta: dict[str, tuple[str, str, tuple[float, ...]]] = {}
        self._values: dict[str, dict[tuple[tuple[str, str], ...], Any]] = defaultdict(dict)

    def declare(self, name: str, kind: str, help_: str, buckets: Sequence[float] = ()) -> None:
        self._meta[name] = (kind, help_, tuple(buckets))

    @staticmethod
    def _key(
        labels: dict[str, str] | None, have: dict[tuple[tuple[str, str], ...], Any]
    ) -> tuple[tuple[str, str], ...]:
        """The series key of `labels`; past MAX_SERIES series of a metric, the overflow
        series (a bound on memory whatever the labels)."""
        key = tuple(sorted((labels or {}).items()))
        if key not in have and len(have) >= MAX_SERIES:
            return OVERFLOW
        return key

    def inc(self, name: str, value: float = 1.0, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            vals = self._values[name]
            key = self._key(labels, vals)
            vals[key] = vals.get(key, 0.0) + value

    def set(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            vals = self._values[name]
            vals[self._key(labels, vals)] = float(value)

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        buckets = self._meta[name][2]
        with self._lock:
            vals = self._values[name]
            key = self._key(labels, vals)
            h = vals.get(key)
            if h is None:
                h = vals[key] = {"buckets": [0] * len(buckets), "sum": 0.0, "count": 0}
            for i, b in enumerate(buckets):
                if value <= b:
                    h["buckets"][i] += 1
            h["sum"] += value
            h["count"] += 1

    def value(self, name: str, labels: dict[str, str] | None = None) -> Any:
        with self._lock:
            return self._values.get(name, {}).get(tuple(sorted((labels or {}).items())))

    @staticmethod
    def _fmt(labels: tuple[tuple[str, str], ...], extra: tuple[str, str] | None = None) -> str:
        items = list(labels) + ([extra] if extra else [])
        if not items:
            return ""
        body = ",".join(
            f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
            for k, v in items
        )
        return "{" + body + "}"

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        out: list[str] = []
        with self._lock:
            for name, (kind, help_, buckets) in self._meta.items():
                out.append(f"# HELP {name} {help_}")
                out.append(f"# TYPE {name} {kind}")
                for key, v in sorted(self._values.get(name, {}).items()):
                    if kind != "histogram":
                        out.append(f"{name}{self._fmt(key)} {float(v):.10g}")
                        continue
                    for b, c in zip(buckets, v["buckets"], strict=True):
                        out.append(f"{name}_bucket{self._fmt(key, ('le', f'{b:g}'))} {c}")
                    out.append(f"{name}_bucket{self._fmt(key, ('le', '+Inf'))} {v['count']}")
                    out.append(f"{name}_sum{self._fmt(key)} {v['sum']:.10g}")
                    out.append(f"{name}_count{self._fmt(key)} {v['count']}")
        return "\n".join(out) + "\n"


def service_metrics() -> Metrics:
    """A registry with every metric the service reports (docs/SERVING.md)."""
    m = Metrics()
    m.declare("freshrec_http_requests_total", "counter", "HTTP requests by endpoint and status")
    m.declare(
        "freshrec_http_request_duration_seconds",
        "histogram",
        "HTTP request latency by endpoint",
        LATENCY_BUCKETS,
    )
    m.declare(
        "freshrec_recommend_batch_size", "histogram", "requests per beam search", BATCH_BUCKETS
    )
    m.declare("freshrec_warm_items", "gauge", "items of the trained catalog")
    m.declare("freshrec_items", "gauge", "items added through the API, by status")
    m.declare("freshrec_live_items", "gauge", "recommendable items (warm + live new)")
    m.declare("freshrec_pending_items", "gauge", "acknowledged items waiting for their edit")
    m.declare("freshrec_items_added_total", "counter", "items acknowledged by POST /items")
    m.declare("freshrec_edit_packs_applied", "gauge", "edit packs currently applied")
    m.declare("freshrec_edits_total", "counter", "edit attempts by result")
    m.declare("freshrec_edit_seconds", "histogram", "seconds per edit (pack)", EDIT_BUCKETS)
    m.declare(
        "freshrec_item_live_seconds",
        "histogram",
        "seconds from acknowledgement to live",
        EDIT_BUCKETS,
    )
    m.declare("freshrec_rollbacks_total", "counter", "edit packs rolled back")
    m.declare("freshrec_compactions_total", "counter", "compactions (packs folded into one)")
    m.declare("freshrec_packs_quarantined", "gauge", "unreadable packs moved to quarantine/")
    m.declare("freshrec_requests_in_flight", "gauge", "HTTP requests in flight by class")
    m.declare("freshrec_http_shed_total", "counter", "requests answered 429 (over capacity)")
    m.declare("freshrec_replica_lag_seconds", "gauge", "a replica: seconds since its last sync")
    return m

"""Reading one sample out of a Prometheus text exposition (what a scrape of /metrics returns)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` whose labels include ``labels``; 0 when there is none (yet)."""
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0

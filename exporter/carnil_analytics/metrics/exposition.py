"""Metric families written straight into the Prometheus text format.

prometheus_client's ``generate_latest`` checks and escapes every label name of every sample
and builds a namedtuple per sample; for a scrape of hundreds of thousands of samples that is
most of the time spent (benchmarks/metrics_scrape.py). Here a family's label names are fixed
when it is declared, so each sample is one formatted line. Label values are still escaped
(backslash, double quote, newline), though validated ids cannot contain those characters.
"""

from __future__ import annotations

import math

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


def label_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.translate(_ESCAPES)
    return value


def number(value: float) -> str:
    if math.isfinite(value):
        return repr(float(value))
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


class TextFamily:
    """One family: its HELP and TYPE lines, then one line per sample."""

    def __init__(self, name: str, kind: str, help_text: str, labels: tuple[str, ...]):
        self.name = name
        self._sample = f"{name}_total" if kind == "counter" else name
        escaped_help = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self._header = (f"# HELP {self._sample} {escaped_help}\n"
                        f"# TYPE {self._sample} {kind}\n")
        pairs = ",".join(f'{label}="%s"' for label in labels)
        self._line = f"{self._sample}{{{pairs}}} %s\n" if labels else f"{self._sample} %s\n"
        self._lines: list[str] = []

    def add(self, values, value: float) -> None:
        self._lines.append(self._line % (*map(label_value, values), number(value)))

    def text(self) -> str:
        return self._header + "".join(self._lines)

"""The bot's own metrics on this machine, computed as CloudWatch computes them from EMF log lines.

In AWS, CloudWatch Logs reads each embedded metric format (EMF) document a function writes to its
log and turns it into metric data points, which the dashboard in template.yaml charts. Locally the
pipeline hands `EmfAggregator` the same log lines (`bot.metrics.listen`), and it keeps, per
namespace, metric name, unit and dimension set, the statistics CloudWatch offers: SampleCount,
Sum, Minimum, Maximum, Average, p50 and p99, since the pipeline started. It reads only the
documents, never the calls that produced them: what it shows is what CloudWatch would get.

A document CloudWatch would refuse (a metric value that is not a number, a dimension whose value
is missing, ...) is rejected whole and counted with its reason; a log line that is no EMF document
is ignored, as CloudWatch ignores it. Memory stays bounded whatever is recorded: percentiles are
exact over a series' first EXACT_UP_TO values and come from logarithmic buckets beyond
(DDSketch's scheme: within 1 % of the true value, at most MAX_BUCKETS buckets a series), and at
most MAX_SERIES series are kept (values of further ones are counted as dropped, and said).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from bot.metrics import METRICS

# Limits of the EMF specification and of CloudWatch's metric model.
MAX_LINE_CHARS = 1_048_576  # a CloudWatch Logs event (EMF documents share its limit)
MAX_DIMENSIONS = 30  # keys in one dimension set
MAX_METRICS = 100  # metric definitions in one directive
MAX_VALUES = 100  # values in one metric's array
MAX_NAME_CHARS = 255  # a namespace, a metric or a dimension name
MAX_DIMENSION_VALUE_CHARS = 1024
MAX_MAGNITUDE = 2.0**360  # CloudWatch refuses values beyond ±2^360

# Bounds of this aggregator.
MAX_SERIES = 500
MAX_BUCKETS = 512  # per sign and series: values spanning 1 : 27,000 keep full accuracy
RELATIVE_ACCURACY = 0.01
EXACT_UP_TO = 1000  # values a series keeps for exact percentiles before it relies on the sketch

STATISTICS = ("SampleCount", "Sum", "Minimum", "Maximum", "Average", "p50", "p99")
UNIT_SYMBOLS = {"Milliseconds": "ms", "Seconds": "s", "Microseconds": "µs", "Bytes": "B", "Percent": "%"}


class EmfError(ValueError):
    """A document CloudWatch would not turn into metrics; the message says what is wrong."""


@dataclass(frozen=True)
class DataPoint:
    """One metric's values from one EMF document, under one of its dimension sets."""

    namespace: str
    name: str
    unit: str
    dimensions: tuple[tuple[str, str], ...]  # sorted by dimension name
    values: tuple[float, ...]
    timestamp_ms: int


def is_emf(document: object) -> bool:
    """A JSON object carrying EMF metadata; anything else is an ordinary log line."""
    return isinstance(document, Mapping) and "_aws" in document


def _claims_emf(line: str) -> bool:
    try:
        return is_emf(json.loads(line))
    except ValueError:
        return False


def parse_line(line: str) -> list[DataPoint]:
    """The data points of one log line that holds an EMF document.

    Raises
    ------
    EmfError
        The line is no JSON object with `_aws` metadata, or the document breaks the EMF
        specification (CloudWatch would extract nothing from it).
    """
    if len(line) > MAX_LINE_CHARS:
        raise EmfError(f"the line has {len(line)} characters; a log event holds at most {MAX_LINE_CHARS}")
    try:
        document = json.loads(line)
    except json.JSONDecodeError as error:
        raise EmfError(f"not JSON ({error.msg} at character {error.pos})") from None
    if not is_emf(document):
        raise EmfError("not an EMF document: a JSON object with an `_aws` member is expected")
    return parse_document(document)


def parse_document(document: Mapping[str, Any]) -> list[DataPoint]:
    """The data points an EMF document defines: each metric of each directive, once per dimension set.

    Raises
    ------
    EmfError
        What in the document breaks the EMF specification, naming the member.
    """
    metadata = document.get("_aws")
    if not isinstance(metadata, Mapping):
        raise EmfError("`_aws` must be an object holding CloudWatchMetrics and Timestamp")
    timestamp = metadata.get("Timestamp")
    if not _is_number(timestamp):
        raise EmfError(f"`_aws.Timestamp` must be milliseconds since the epoch (a number), not {timestamp!r}")
    directives = metadata.get("CloudWatchMetrics")
    if not isinstance(directives, list) or not directives:
        raise EmfError("`_aws.CloudWatchMetrics` must be a non-empty array of metric directives")
    points: list[DataPoint] = []
    for i, directive in enumerate(directives):
        points += _directive_points(document, directive, f"CloudWatchMetrics[{i}]", int(timestamp))
    return points


def _directive_points(
    document: Mapping[str, Any], directive: object, where: str, timestamp_ms: int
) -> list[DataPoint]:
    if not isinstance(directive, Mapping):
        raise EmfError(f"{where} must be an object with Namespace, Dimensions and Metrics")
    namespace = directive.get("Namespace")
    if not isinstance(namespace, str) or not 0 < len(namespace) <= MAX_NAME_CHARS:
        raise EmfError(f"{where}.Namespace must be a string of 1 to {MAX_NAME_CHARS} characters")
    dimension_sets = _dimension_sets(document, directive.get("Dimensions"), where)
    definitions = directive.get("Metrics")
    if not isinstance(definitions, list) or not 0 < len(definitions) <= MAX_METRICS:
        raise EmfError(f"{where}.Metrics must be an array of 1 to {MAX_METRICS} metric definitions")
    points = []
    for j, definition in enumerate(definitions):
        name, unit = _definition(definition, f"{where}.Metrics[{j}]")
        values = _values(document.get(name), name)
        for dimensions in dimension_sets:
            points.append(DataPoint(namespace, name, unit, dimensions, values, timestamp_ms))
    return points


def _dimension_sets(
    document: Mapping[str, Any], raw: object, where: str
) -> list[tuple[tuple[str, str], ...]]:
    if not isinstance(raw, list):
        raise EmfError(f"{where}.Dimensions must be an array of dimension sets (arrays of names)")
    sets: list[tuple[tuple[str, str], ...]] = []
    for k, names in enumerate(raw):
        if not isinstance(names, list) or len(names) > MAX_DIMENSIONS:
            raise EmfError(f"{where}.Dimensions[{k}] must be an array of at most {MAX_DIMENSIONS} names")
        dimensions = {}
        for name in names:
            if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
                raise EmfError(
                    f"{where}.Dimensions[{k}] holds {name!r}: names are 1 to {MAX_NAME_CHARS} characters"
                )
            value = document.get(name)
            if not isinstance(value, str) or not 0 < len(value) <= MAX_DIMENSION_VALUE_CHARS:
                raise EmfError(
                    f"dimension {name!r} needs a string value of 1 to {MAX_DIMENSION_VALUE_CHARS} characters "
                    f"at the document's root, not {_shown(value)}"
                )
            dimensions[name] = value
        sets.append(tuple(sorted(dimensions.items())))
    return sets or [()]  # no dimension set: the metric has no dimensions


def _definition(definition: object, where: str) -> tuple[str, str]:
    if not isinstance(definition, Mapping):
        raise EmfError(f"{where} must be an object with Name (and Unit)")
    name = definition.get("Name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        raise EmfError(f"{where}.Name must be a string of 1 to {MAX_NAME_CHARS} characters")
    unit = definition.get("Unit", "None")
    if not isinstance(unit, str) or not unit:
        raise EmfError(
            f"{where}.Unit must be a CloudWatch unit name (Count, Milliseconds, ...), not {unit!r}"
        )
    return name, unit


def _values(raw: object, name: str) -> tuple[float, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not 0 < len(values) <= MAX_VALUES:
        raise EmfError(f"metric {name!r} needs 1 to {MAX_VALUES} values, not {len(values)}")
    numbers = []
    for value in values:
        if not _is_number(value):
            raise EmfError(
                f"metric {name!r} needs a finite number (or an array of them) at the document's root, "
                f"not {_shown(value)}"
            )
        if abs(value) > MAX_MAGNITUDE:
            raise EmfError(f"metric {name!r} has {value:g}: CloudWatch takes values from -2^360 to 2^360")
        numbers.append(float(value))
    return tuple(numbers)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: object) -> str:
    text = "nothing" if value is None else repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


# -- statistics of one series ------------------------------------------------------------------


class _Sketch:
    """Counts of values in logarithmic buckets, so that any percentile is within RELATIVE_ACCURACY
    of the true one (DDSketch). When a sign holds more than MAX_BUCKETS buckets, its smallest
    magnitudes merge: the high percentiles, the ones that matter for latencies, stay exact."""

    _gamma = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
    _log_gamma = math.log(_gamma)
    _tiny = 1e-9

    def __init__(self) -> None:
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self.zeros = 0

    def add(self, value: float) -> None:
        if abs(value) < self._tiny:
            self.zeros += 1
            return
        store = self.positive if value > 0 else self.negative
        index = math.ceil(math.log(abs(value)) / self._log_gamma)
        store[index] = store.get(index, 0) + 1
        if len(store) > MAX_BUCKETS:
            lowest, second = sorted(store)[:2]
            store[second] += store.pop(lowest)

    def value_at_rank(self, rank: int) -> float:
        """The value of the `rank`-th smallest sample (1-based), within the sketch's accuracy."""
        seen = 0
        for index in sorted(self.negative, reverse=True):  # the most negative first
            seen += self.negative[index]
            if seen >= rank:
                return -self._bucket_value(index)
        seen += self.zeros
        if seen >= rank:
            return 0.0
        for index in sorted(self.positive):
            seen += self.positive[index]
            if seen >= rank:
                return self._bucket_value(index)
        raise ValueError(f"rank {rank} is beyond the {seen} values recorded")

    def buckets(self) -> int:
        return len(self.positive) + len(self.negative)

    def _bucket_value(self, index: int) -> float:
        return 2 * self._gamma**index / (self._gamma + 1)


class Statistics:
    """SampleCount, Sum, Minimum and Maximum of one series, exact; its percentiles exact up to
    EXACT_UP_TO values (a local session rarely has more), sketched beyond."""

    __slots__ = ("_sketch", "_values", "count", "maximum", "minimum", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self._values: list[float] | None = []
        self._sketch = _Sketch()

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self._sketch.add(value)
        if self._values is not None:
            self._values.append(value)
            if len(self._values) > EXACT_UP_TO:
                self._values = None

    def percentile(self, p: float) -> float:
        """CloudWatch's pNN: the smallest value with at least NN % of the samples at or below it."""
        return self._percentiles((p,))[0]

    def figures(self) -> dict[str, float]:
        p50, p99 = self._percentiles((50, 99))
        return {
            "SampleCount": self.count,
            "Sum": self.total,
            "Minimum": self.minimum,
            "Maximum": self.maximum,
            "Average": self.total / self.count,
            "p50": p50,
            "p99": p99,
        }

    def _percentiles(self, ps: tuple[float, ...]) -> list[float]:
        if not self.count:
            raise ValueError("no values recorded")
        ordered = sorted(self._values) if self._values is not None else None
        found = []
        for p in ps:
            if not 0 < p <= 100:
                raise ValueError(f"a percentile is above 0 and at most 100, not {p}")
            rank = max(1, math.ceil(p / 100 * self.count - 1e-9))
            if ordered is not None:
                value = ordered[rank - 1]
            elif rank == self.count:
                value = self.maximum  # the ends are known exactly
            else:
                value = self._sketch.value_at_rank(rank)
            found.append(min(self.maximum, max(self.minimum, value)))
        return found


# -- the aggregator ----------------------------------------------------------------------------

SeriesKey = tuple[str, str, str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Series:
    """One metric under one set of dimension values, with its statistics."""

    namespace: str
    name: str
    unit: str
    dimensions: dict[str, str]
    statistics: dict[str, float]

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "unit": self.unit,
            "dimensions": self.dimensions,
            "statistics": self.statistics,
        }


@dataclass(frozen=True)
class Snapshot:
    """What the aggregator holds at one moment, in the dashboard's order of metrics."""

    started_at: float
    updated_at: float | None
    version: int
    documents: int
    rejected: int
    last_rejection: str
    dropped: int
    series: list[Series] = field(default_factory=list)

    def find(self, name: str, **dimensions: str) -> list[Series]:
        """The series of metric `name` whose dimensions include these values."""
        return [
            s
            for s in self.series
            if s.name == name and all(s.dimensions.get(k) == v for k, v in dimensions.items())
        ]

    def total(self, name: str, statistic: str = "Sum", **dimensions: str) -> float:
        """`statistic` (Sum or SampleCount) added up over the series of `name` matching `dimensions`."""
        return sum(s.statistics[statistic] for s in self.find(name, **dimensions))

    def as_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "version": self.version,
            "documents": self.documents,
            "rejected": self.rejected,
            "last_rejection": self.last_rejection,
            "dropped": self.dropped,
            "max_series": MAX_SERIES,
            "statistics": list(STATISTICS),
            "series": [s.as_json() for s in self.series],
        }


class EmfAggregator:
    """Statistics of every metric in the EMF log lines it is given, thread-safe and bounded.

    `observe` is a `bot.metrics` listener; `snapshot` and `summary` read what it holds; `version`
    changes with every document that added data points (the console prints only when it did).
    """

    def __init__(self, *, max_series: int = MAX_SERIES, clock: Callable[[], float] = time.time) -> None:
        self.max_series = max_series
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[SeriesKey, Statistics] = {}
        self._started_at = clock()
        self._updated_at: float | None = None
        self._version = 0
        self._documents = 0
        self._rejected = 0
        self._last_rejection = ""
        self._dropped = 0

    @property
    def version(self) -> int:
        return self._version

    def observe(self, line: str) -> None:
        """Add the data points of one log line. An ordinary log line (not JSON, or no `_aws`) is
        ignored, as CloudWatch ignores it; an EMF document that breaks the specification is
        counted as rejected, with its reason. Never raises."""
        try:
            points = parse_line(line)
        except EmfError as error:
            if _claims_emf(line):
                with self._lock:
                    self._rejected += 1
                    self._last_rejection = str(error)[:300]
            return
        with self._lock:
            self._documents += 1
            for point in points:
                key = (point.namespace, point.name, point.unit, point.dimensions)
                statistics = self._series.get(key)
                if statistics is None:
                    if len(self._series) >= self.max_series:
                        self._dropped += len(point.values)
                        continue
                    statistics = self._series[key] = Statistics()
                for value in point.values:
                    statistics.add(value)
            self._version += 1
            self._updated_at = self._clock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            held = [(key, statistics.figures()) for key, statistics in self._series.items()]
            counts = (self._version, self._documents, self._rejected, self._last_rejection, self._dropped)
            updated_at = self._updated_at
        order = {name: i for i, name in enumerate(METRICS)}
        held.sort(key=lambda item: (order.get(item[0][1], len(order)), item[0][1], item[0][0], item[0][3]))
        version, documents, rejected, last_rejection, dropped = counts
        return Snapshot(
            started_at=self._started_at,
            updated_at=updated_at,
            version=version,
            documents=documents,
            rejected=rejected,
            last_rejection=last_rejection,
            dropped=dropped,
            series=[
                Series(namespace, name, unit, dict(dimensions), figures)
                for (namespace, name, unit, dimensions), figures in held
            ],
        )

    def summary(self, width: int = 220) -> list[str]:
        return summary_lines(self.snapshot(), width=width)


# -- the console's summary -----------------------------------------------------------------------


def summary_lines(snapshot: Snapshot, *, width: int = 220) -> list[str]:
    """A few lines: what was recorded since when, then one line per metric with its figures by
    dimension values (counts: Sum; the rest: p50/p99/Maximum and the number of samples, or the
    value of a single sample), largest first, as many as fit in `width`."""
    started = time.strftime("%H:%M:%S", time.localtime(snapshot.started_at))
    head = f"metrics since {started}: {snapshot.documents} EMF document{'s' * (snapshot.documents != 1)}"
    namespaces = sorted({s.namespace for s in snapshot.series})
    if namespaces:
        head += f" in {', '.join(namespaces)}"
    if snapshot.rejected:
        head += f"; {snapshot.rejected} rejected (last: {snapshot.last_rejection})"
    if snapshot.dropped:
        head += f"; {snapshot.dropped} values dropped past {MAX_SERIES} series"
    if not snapshot.series:
        return [head + "; nothing recorded yet"]
    # The Powertools `service` dimension says nothing when every series shares one value.
    services = {s.dimensions.get("service") for s in snapshot.series}
    hidden = {"service"} if len(services) == 1 else set()
    lines = [_clip(head, width)]
    groups: dict[tuple[str, str, str], list[Series]] = {}
    for s in snapshot.series:
        groups.setdefault((s.namespace, s.name, s.unit), []).append(s)
    for (namespace, name, unit), series in groups.items():
        title = name if len(namespaces) == 1 else f"{namespace}/{name}"
        keys = sorted({k for s in series for k in s.dimensions} - hidden)
        by = f" ({'/'.join(keys)})" if keys else ""

        def label(s: Series, keys: list[str] = keys) -> str:
            return "/".join(s.dimensions.get(k, "-") for k in keys) or "all"

        if unit == "Count":
            total = sum(s.statistics["Sum"] for s in series)
            ranked = sorted(series, key=lambda s: -s.statistics["Sum"])
            start = f"  {title}{by} {_figure(total)}: "
            entries = [f"{label(s)} {_figure(s.statistics['Sum'])}" for s in ranked]
        else:
            symbol = UNIT_SYMBOLS.get(unit, "" if unit == "None" else unit)
            ranked = sorted(series, key=lambda s: -s.statistics["p99"])
            start = f"  {title}{by} p50/p99/max{f' {symbol}' if symbol else ''}: "
            entries = [f"{label(s)} {_distribution(s.statistics)}" for s in ranked]
        lines.append(_fit(start, entries, width))
    return lines


def _fit(start: str, entries: list[str], width: int) -> str:
    """`start` and as many entries as fit in `width`, then how many more there are."""
    shown: list[str] = []
    for i, entry in enumerate(entries):
        rest = len(entries) - i - 1
        if len(start + ", ".join([*shown, entry]) + (f", +{rest} more" if rest else "")) > width:
            return start + ", ".join([*shown, f"+{len(entries) - len(shown)} more"])
        shown.append(entry)
    return start + ", ".join(shown)


def _distribution(statistics: Mapping[str, float]) -> str:
    """p50/p99/max ×samples; a single sample is just its value."""
    if statistics["SampleCount"] == 1:
        return _figure(statistics["Maximum"])
    figures = "/".join(_figure(statistics[k]) for k in ("p50", "p99", "Maximum"))
    return f"{figures} ×{int(statistics['SampleCount'])}"


def _figure(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.1e}"


def _clip(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"

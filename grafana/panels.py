"""Shared defaults for the Carnil dashboards: datasources, query targets, panel kinds, variables,
layout and the dashboard envelope. Dashboard modules call these; nothing here knows a metric.

Plain dicts in Grafana 11's dashboard JSON model (what grafana-foundation-sdk builders emit),
so the generator needs nothing beyond the standard library.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

SCHEMA_VERSION = 39  # Grafana 11.0 – 11.2; Grafana 11.3+ migrates it on load
GRID_COLUMNS = 24

# Datasources by the uid provisioned in provisioning/grafana/datasources/carnil.yml.
PROMETHEUS = {"type": "prometheus", "uid": "carnil-prometheus"}
INFLUXDB = {"type": "influxdb", "uid": "carnil-influxdb"}

# Thresholds of a usage limit's utilization, as in the alerts: nearly reached, reached.
UTILIZATION_STEPS = [
    {"color": "green", "value": None},
    {"color": "orange", "value": 0.8},
    {"color": "red", "value": 1},
]
PLAIN_STEPS = [{"color": "green", "value": None}]
CUSTOMER_DASHBOARD_UID = "carnil-customer-usage"
CUSTOMER_LINK = {
    "targetBlank": False,
    "title": "Customer usage of ${__field.labels.customer}",
    "url": f"/d/{CUSTOMER_DASHBOARD_UID}/customer-usage?var-customer=${{__field.labels.customer}}"
           "&${__url_time_range}",
}


# ---------------------------------------------------------------------------- query targets


def prom(expr: str, legend: str = "__auto", *, instant: bool = False,
         table: bool = False) -> dict:
    """A PromQL target (refId is set by the panel)."""
    return {
        "datasource": PROMETHEUS,
        "editorMode": "code",
        "expr": expr,
        "format": "table" if table else "time_series",
        "instant": instant,
        "legendFormat": legend,
        "range": not instant,
    }


def influxql(query: str, alias: str = "", *, table: bool = False) -> dict:
    """A raw InfluxQL target (refId is set by the panel)."""
    return {
        "alias": alias,
        "datasource": INFLUXDB,
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }


def _with_ref_ids(targets: Iterable[dict]) -> list[dict]:
    out = []
    for index, target in enumerate(targets):
        target = copy.deepcopy(target)
        target["refId"] = chr(ord("A") + index)
        out.append(target)
    return out


# ---------------------------------------------------------------------------- panel kinds


def _panel(kind: str, title: str, targets: list[dict], *, w: int, h: int, description: str,
           unit: str, options: dict, defaults: dict | None = None,
           transformations: list | None = None, overrides: list | None = None,
           interval: str | None = None) -> dict:
    datasources = {t["datasource"]["uid"]: t["datasource"] for t in targets}
    panel = {
        "datasource": next(iter(datasources.values())) if len(datasources) == 1
        else {"type": "datasource", "uid": "-- Mixed --"},
        "description": description,
        "fieldConfig": {
            "defaults": {"unit": unit, **(defaults or {})},
            "overrides": overrides or [],
        },
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "options": options,
        "targets": _with_ref_ids(targets),
        "title": title,
        "transformations": transformations or [],
        "type": kind,
    }
    if interval:
        panel["interval"] = interval
    return panel


def _reduce(calc: str) -> dict:
    return {"calcs": [calc], "fields": "", "values": False}


def stat(title: str, targets: list[dict], *, unit: str = "short", description: str = "",
         w: int = 6, h: int = 4, calc: str = "lastNotNull", steps: list | None = None,
         decimals: int | None = None, transformations: list | None = None,
         mappings: list | None = None) -> dict:
    defaults = {"color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": steps or PLAIN_STEPS},
                "mappings": mappings or []}
    if decimals is not None:
        defaults["decimals"] = decimals
    options = {"colorMode": "value", "graphMode": "none", "justifyMode": "auto",
               "orientation": "auto", "reduceOptions": _reduce(calc), "showPercentChange": False,
               "textMode": "auto", "wideLayout": True}
    return _panel("stat", title, targets, w=w, h=h, description=description, unit=unit,
                  options=options, defaults=defaults, transformations=transformations)


def gauge(title: str, targets: list[dict], *, unit: str, description: str = "",
          w: int = 8, h: int = 8, minimum: float = 0, maximum: float = 1,
          steps: list | None = None) -> dict:
    defaults = {"color": {"mode": "thresholds"}, "min": minimum, "max": maximum,
                "thresholds": {"mode": "absolute", "steps": steps or PLAIN_STEPS}}
    options = {"minVizHeight": 75, "minVizWidth": 75, "orientation": "auto",
               "reduceOptions": _reduce("lastNotNull"), "showThresholdLabels": False,
               "showThresholdMarkers": True, "sizing": "auto"}
    return _panel("gauge", title, targets, w=w, h=h, description=description, unit=unit,
                  options=options, defaults=defaults)


def bar_gauge(title: str, targets: list[dict], *, unit: str, description: str = "",
              w: int = 12, h: int = 8, steps: list | None = None,
              maximum: float | None = None, links: list | None = None) -> dict:
    defaults = {"color": {"mode": "thresholds"}, "min": 0, "links": links or [],
                "thresholds": {"mode": "absolute", "steps": steps or PLAIN_STEPS}}
    if maximum is not None:
        defaults["max"] = maximum
    options = {"displayMode": "gradient", "maxVizHeight": 300, "minVizHeight": 16,
               "minVizWidth": 8, "namePlacement": "auto", "orientation": "horizontal",
               "reduceOptions": _reduce("lastNotNull"), "showUnfilled": True,
               "sizing": "auto", "valueMode": "color"}
    return _panel("bargauge", title, targets, w=w, h=h, description=description, unit=unit,
                  options=options, defaults=defaults)


def timeseries(title: str, targets: list[dict], *, unit: str, description: str = "",
               w: int = 12, h: int = 8, stacked: bool = False, bars: bool = False,
               interval: str | None = None) -> dict:
    defaults = {
        "color": {"mode": "palette-classic"},
        "custom": {
            "axisBorderShow": False, "axisPlacement": "auto",
            "drawStyle": "bars" if bars else "line",
            "fillOpacity": 80 if bars else (25 if stacked else 10),
            "gradientMode": "none", "lineInterpolation": "linear", "lineWidth": 1,
            "pointSize": 4, "showPoints": "never", "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
        },
        "thresholds": {"mode": "absolute", "steps": PLAIN_STEPS},
    }
    options = {"legend": {"calcs": ["sum"] if bars else ["mean", "max"],
                          "displayMode": "table", "placement": "bottom", "showLegend": True},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return _panel("timeseries", title, targets, w=w, h=h, description=description, unit=unit,
                  options=options, defaults=defaults, interval=interval)


def table(title: str, targets: list[dict], *, unit: str = "short", description: str = "",
          w: int = 12, h: int = 8, sort_by: str | None = None,
          transformations: list | None = None, overrides: list | None = None,
          links: list | None = None) -> dict:
    defaults = {"custom": {"align": "auto", "cellOptions": {"type": "auto"}},
                "links": links or [],
                "thresholds": {"mode": "absolute", "steps": PLAIN_STEPS}}
    options = {"cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"],
                                              "countRows": False, "fields": ""},
               "showHeader": True,
               "sortBy": [{"desc": True, "displayName": sort_by}] if sort_by else []}
    return _panel("table", title, targets, w=w, h=h, description=description, unit=unit,
                  options=options, defaults=defaults, transformations=transformations,
                  overrides=overrides)


def pie(title: str, targets: list[dict], *, unit: str, description: str = "",
        w: int = 8, h: int = 8) -> dict:
    defaults = {"color": {"mode": "palette-classic"}}
    options = {"displayLabels": ["percent"], "pieType": "donut",
               "legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                          "values": ["value", "percent"]},
               "reduceOptions": _reduce("lastNotNull"),
               "tooltip": {"mode": "single", "sort": "none"}}
    return _panel("piechart", title, targets, w=w, h=h, description=description, unit=unit,
                  options=options, defaults=defaults)


def row(title: str, panels: list[dict] | None = None, *, collapsed: bool = False) -> dict:
    """A row; a collapsed row carries its panels inside it (Grafana's model)."""
    return {"collapsed": collapsed, "gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": 0},
            "panels": list(panels or []), "title": title, "type": "row"}


# ---------------------------------------------------------------------------- transformations


def organize(rename: dict[str, str], hide: Iterable[str] = ()) -> dict:
    """Rename columns (in this order) and hide others."""
    return {"id": "organize", "options": {
        "excludeByName": {name: True for name in hide},
        "indexByName": {name: index for index, name in enumerate(rename)},
        "renameByName": rename,
    }}


MERGE = {"id": "merge", "options": {}}
SERIES_TO_ROWS = {"id": "seriesToRows", "options": {}}


def override_unit(field: str, unit: str, extra: list | None = None) -> dict:
    return {"matcher": {"id": "byName", "options": field},
            "properties": [{"id": "unit", "value": unit}, *(extra or [])]}


# ---------------------------------------------------------------------------- variables


def query_variable(name: str, label: str, query: str, *, multi: bool = False,
                   description: str = "") -> dict:
    """A Prometheus ``label_values(...)`` variable; multi-value ones offer All as ``.*``."""
    variable = {
        "current": {},
        "datasource": PROMETHEUS,
        "definition": query,
        "description": description,
        "hide": 0,
        "includeAll": multi,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": query,  # the classic string form: every Grafana 11 version reads it
        "refresh": 2,  # on time range change
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }
    if multi:
        variable["allValue"] = ".*"
        variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return variable


def custom_variable(name: str, label: str, choices: list[tuple[str, str]], default: str,
                    description: str = "") -> dict:
    """A fixed list of ``(text, value)`` choices."""
    options = [{"selected": value == default, "text": text, "value": value}
               for text, value in choices]
    current = next(o for o in options if o["selected"])
    return {
        "current": {"selected": True, "text": current["text"], "value": current["value"]},
        "description": description,
        "hide": 0,
        "includeAll": False,
        "label": label,
        "multi": False,
        "name": name,
        "options": options,
        "query": ",".join(f"{text} : {value}" for text, value in choices),
        "skipUrlSync": False,
        "type": "custom",
    }


# ---------------------------------------------------------------------------- layout


def layout(items: list[dict]) -> list[dict]:
    """Place panels left to right, wrapping at 24 columns; a row starts a new line. Panels of
    a collapsed row are placed below it as they will be when it is expanded. Ids are assigned
    in order, so the output depends only on the list."""
    placed: list[dict] = []
    cursor = {"x": 0, "y": 0, "line": 0, "id": 0}

    def place(panel: dict) -> dict:
        panel = copy.deepcopy(panel)
        w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
        if panel["type"] == "row" or cursor["x"] + w > GRID_COLUMNS:
            cursor["y"] += cursor["line"]
            cursor["x"], cursor["line"] = 0, 0
        panel["gridPos"] = {"h": h, "w": w, "x": cursor["x"], "y": cursor["y"]}
        cursor["x"] += w
        cursor["line"] = max(cursor["line"], h)
        cursor["id"] += 1
        panel["id"] = cursor["id"]
        return panel

    for item in items:
        panel = place(item)
        if panel["type"] == "row":
            cursor["y"] += 1
            cursor["x"], cursor["line"] = 0, 0
            if panel["collapsed"]:
                start_y = cursor["y"]
                panel["panels"] = [place(child) for child in panel["panels"]]
                cursor["y"] = start_y  # the children take no room while collapsed
                cursor["x"], cursor["line"] = 0, 0
        placed.append(panel)
    return placed


# ---------------------------------------------------------------------------- dashboard


def dashboard(*, uid: str, title: str, description: str, panels: list[dict],
              variables: list[dict], time_from: str, refresh: str,
              tags: Iterable[str] = ()) -> dict:
    """The dashboard envelope shared by every Carnil dashboard."""
    return {
        "annotations": {"list": []},
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,  # shared crosshair
        "links": [{"asDropdown": True, "icon": "external link", "includeVars": False,
                   "keepTime": True, "tags": ["carnil"], "targetBlank": False,
                   "title": "Carnil dashboards", "tooltip": "", "type": "dashboards",
                   "url": ""}],
        "panels": layout(panels),
        "refresh": refresh,
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["carnil", *tags],
        "templating": {"list": variables},
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }

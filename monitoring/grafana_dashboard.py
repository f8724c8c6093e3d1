"""Writes the Grafana dashboard from the console's panels (api/console/panels.json).

    python3 monitoring/grafana_dashboard.py   # rewrites grafana/dashboards/paystream.json

A unit test fails when the committed dashboard and the console's panels differ.
Standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PANELS = ROOT / "api" / "console" / "panels.json"
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "paystream.json"
# The datasource monitoring/grafana/provisioning/datasources/prometheus.yml creates.
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
UNITS = {"per_second": "ops", "seconds": "s", "bytes": "bytes", "ratio": "percentunit",
         "messages": "short", "count": "short", "breaker": "none"}
CHART_WIDTH, CHART_HEIGHT, STAT_HEIGHT, ALERTS_HEIGHT = 8, 8, 4, 6


def _thresholds(stat: dict[str, Any]) -> dict[str, Any]:
    if "warn_below" in stat:
        steps = [{"color": "orange", "value": None},
                 {"color": "green", "value": stat["warn_below"]}]
    else:
        # Grafana colours from a step's value up; "above 0" of a count starts at 1.
        above = stat["warn_above"] or 1
        steps = [{"color": "green", "value": None}, {"color": "orange", "value": above}]
    return {"mode": "absolute", "steps": steps}


def _stat(stat: dict[str, Any], panel_id: int, x: int, width: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": UNITS[stat["unit"]], "thresholds": _thresholds(stat),
                                "color": {"mode": "thresholds"}}
    if stat["unit"] == "breaker":
        defaults["mappings"] = [{"type": "value", "options": {
            "0": {"text": "closed"}, "1": {"text": "open"}}}]
    return {
        "id": panel_id, "type": "stat", "title": stat["title"], "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": 0, "w": width, "h": STAT_HEIGHT},
        "targets": [{"refId": "A", "datasource": DATASOURCE, "expr": stat["expr"]}],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "textMode": "value"},
    }


def _chart(panel: dict[str, Any], panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id, "type": "timeseries", "title": panel["title"], "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": CHART_WIDTH, "h": CHART_HEIGHT},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q["expr"],
                     "legendFormat": q["legend"]} for i, q in enumerate(panel["queries"])],
        "fieldConfig": {"defaults": {"unit": UNITS[panel["unit"]], "min": 0,
                                     "custom": {"lineWidth": 1, "fillOpacity": 0}},
                        "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom",
                               "calcs": ["lastNotNull"]},
                    "tooltip": {"mode": "multi", "sort": "none"}},
    }


def dashboard(config: dict[str, Any]) -> dict[str, Any]:
    """The dashboard JSON model: stats on top, firing alerts, then one chart per console panel."""
    panels: list[dict[str, Any]] = []
    stats = config["stats"]
    width = 24 // len(stats)
    for i, stat in enumerate(stats):
        panels.append(_stat(stat, len(panels) + 1, i * width, width))
    panels.append({
        "id": len(panels) + 1, "type": "alertlist", "title": "Alerts (Prometheus rules)",
        "gridPos": {"x": 0, "y": STAT_HEIGHT, "w": 24, "h": ALERTS_HEIGHT},
        "options": {"viewMode": "list", "groupMode": "default", "maxItems": 20, "sortOrder": 1,
                    "dashboardAlerts": False, "alertName": "", "alertInstanceLabelFilter": "",
                    "stateFilter": {"firing": True, "pending": True, "noData": False,
                                    "normal": False, "error": True}},
    })
    top = STAT_HEIGHT + ALERTS_HEIGHT
    per_row = 24 // CHART_WIDTH
    for i, panel in enumerate(config["panels"]):
        row, column = divmod(i, per_row)
        panels.append(_chart(panel, len(panels) + 1, column * CHART_WIDTH,
                             top + row * CHART_HEIGHT))
    return {
        "uid": "paystream", "title": config["title"], "tags": ["paystream"],
        "description": "The operator console's charts (api/console/panels.json); "
                       "written by monitoring/grafana_dashboard.py.",
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "refresh": f"{config['refresh_seconds']}s",
        "time": {"from": f"now-{config['range_minutes']}m", "to": "now"},
        "timepicker": {}, "templating": {"list": []}, "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(json.loads(PANELS.read_text())), indent=2) + "\n"


def main() -> int:
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD.write_text(render())
    print(f"wrote {DASHBOARD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Server-side printing for the Kubernetes emulator: the ``meta.k8s.io/v1`` ``Table`` that ``kubectl get`` asks for.

kubectl (>= 1.11) prints what the API server renders when it sends ``Accept: application/json;as=Table;...``:
column definitions and one row of cells per object. The columns here are the API server's own for the kinds a
pdscale cluster shows (``pkg/printers/internalversion/printers.go``: pods, deployments, replicasets,
statefulsets, events, leases), and for custom resources the CRD's ``additionalPrinterColumns`` evaluated with
the JSONPath subset CRDs use (``.a.b``, ``[0]``, ``[?(@.k=="v")]``), as the apiextensions table convertor does.
Ages are rendered on the server with apimachinery's ``HumanDuration``.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Column = dict[str, Any]  # a TableColumnDefinition
Row = list[Any]

_SEGMENT = re.compile(r"\.([A-Za-z0-9_$-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]")


def human_duration(seconds: float) -> str:
    """apimachinery's ``duration.HumanDuration`` (what kubectl shows in AGE columns)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    return f"{hours // (24 * 365)}y{(hours // 24) % 365}d"


def parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def age(value: Any, now: datetime.datetime | None = None) -> str:
    when = parse_time(value)
    if when is None:
        return "<unknown>"
    now = now or datetime.datetime.now(tz=datetime.UTC)
    return human_duration((now - when).total_seconds())


def jsonpath(obj: Any, path: str) -> Any:
    """The value at a CRD printer-column JSONPath (``.status.x``, ``.items[0]``, ``.conditions[?(@.type=="X")].s``);
    None when any step is missing."""
    pos, value = 0, obj
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {path[pos:]!r}")
        pos = m.end()
        key, index, filter_key, filter_value = m.groups()
        if key is not None:
            value = value.get(key) if isinstance(value, Mapping) else None
        elif index is not None:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
        else:
            found = [v for v in value or [] if isinstance(v, Mapping) and str(jsonpath(v, "." + filter_key)) == filter_value] \
                if isinstance(value, list) else []  # fmt: skip
            value = found[0] if found else None
        if value is None:
            return None
    return value


def _cell(value: Any, type_: str) -> Any:
    """A printer-column cell as the apiextensions table convertor renders it (None shows as <none>)."""
    if value is None:
        return None
    if type_ == "date":
        return age(value)
    if type_ == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, separators=(",", ":"))
    return value


def _col(name: str, type_: str = "string", description: str = "", priority: int = 0, fmt: str = "") -> Column:
    return {"name": name, "type": type_, "format": fmt, "description": description, "priority": priority}


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _conditions(obj: Mapping[str, Any]) -> dict[str, str]:
    return {c.get("type", ""): c.get("status", "") for c in (obj.get("status") or {}).get("conditions") or []}


def pod_status_reason(pod: Mapping[str, Any]) -> str:
    """The STATUS column of ``kubectl get pods``: Terminating, a waiting container's reason, else the phase."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if "waiting" in state and (state["waiting"] or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state and (state["terminated"] or {}).get("reason"):
            reason = state["terminated"]["reason"]
    if _meta(pod).get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def _pod_row(pod: Mapping[str, Any]) -> Row:
    status = pod.get("status") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    return [_meta(pod).get("name"), f"{ready}/{len(containers)}", pod_status_reason(pod), restarts,
            age(_meta(pod).get("creationTimestamp")), status.get("podIP") or "<none>",
            (pod.get("spec") or {}).get("nodeName") or "<none>", "<none>", "<none>"]  # fmt: skip


def _deployment_row(obj: Mapping[str, Any]) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
    selector = ",".join(f"{k}={v}" for k, v in ((spec.get("selector") or {}).get("matchLabels") or {}).items())
    return [_meta(obj).get("name"), f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
            int(status.get("updatedReplicas") or 0), int(status.get("availableReplicas") or 0),
            age(_meta(obj).get("creationTimestamp")), ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers), selector]  # fmt: skip


def _replicaset_row(obj: Mapping[str, Any]) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [_meta(obj).get("name"), int(spec.get("replicas") or 0), int(status.get("replicas") or 0),
            int(status.get("readyReplicas") or 0), age(_meta(obj).get("creationTimestamp"))]  # fmt: skip


def _statefulset_row(obj: Mapping[str, Any]) -> Row:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [_meta(obj).get("name"), f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas') or 0)}",
            age(_meta(obj).get("creationTimestamp"))]  # fmt: skip


def _event_row(obj: Mapping[str, Any]) -> Row:
    inv = obj.get("involvedObject") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or _meta(obj).get("creationTimestamp")
    return [age(last), obj.get("type"), obj.get("reason"), f"{str(inv.get('kind', '')).lower()}/{inv.get('name')}",
            obj.get("message")]  # fmt: skip


def _lease_row(obj: Mapping[str, Any]) -> Row:
    return [_meta(obj).get("name"), (obj.get("spec") or {}).get("holderIdentity") or "",
            age(_meta(obj).get("creationTimestamp"))]  # fmt: skip


def _name_age_row(obj: Mapping[str, Any]) -> Row:
    return [_meta(obj).get("name"), age(_meta(obj).get("creationTimestamp"))]


_NAME = _col("Name", fmt="name", description="Name must be unique within a namespace.")
_AGE = _col("Age", description="CreationTimestamp is a timestamp representing the server time when this object "
            "was created.")  # fmt: skip
BUILTIN: dict[str, tuple[list[Column], Callable[[Mapping[str, Any]], Row]]] = {
    "pods": ([_NAME, _col("Ready"), _col("Status"), _col("Restarts", "string"), _AGE, _col("IP", priority=1),
              _col("Node", priority=1), _col("Nominated Node", priority=1), _col("Readiness Gates", priority=1)],
             _pod_row),
    "deployments": ([_NAME, _col("Ready"), _col("Up-to-date", "integer"), _col("Available", "integer"), _AGE,
                     _col("Containers", priority=1), _col("Images", priority=1), _col("Selector", priority=1)],
                    _deployment_row),
    "replicasets": ([_NAME, _col("Desired", "integer"), _col("Current", "integer"), _col("Ready", "integer"), _AGE],
                    _replicaset_row),
    "statefulsets": ([_NAME, _col("Ready"), _AGE], _statefulset_row),
    "events": ([_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")], _event_row),
    "leases": ([_NAME, _col("Holder"), _AGE], _lease_row),
}  # fmt: skip


def printer_columns(crd: Mapping[str, Any], version: str) -> list[Mapping[str, Any]]:
    """The ``additionalPrinterColumns`` of one served version of a CRD (empty when it has none)."""
    for v in (crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            return list(v.get("additionalPrinterColumns") or [])
    return []


def table(plural: str, objects: Sequence[Mapping[str, Any]], resource_version: str,
          crd_columns: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:  # fmt: skip
    """The ``Table`` the API server answers for ``objects`` of ``plural`` (built-in columns, a CRD's printer
    columns, or Name and Age)."""
    if plural in BUILTIN:
        columns, render = BUILTIN[plural]
        rows = [render(o) for o in objects]
    elif crd_columns:
        columns = [_NAME] + [
            _col(c["name"], c.get("type", "string"), c.get("description", ""), int(c.get("priority", 0)),
                 c.get("format", ""))
            for c in crd_columns
        ]
        rows = [
            [_meta(o).get("name")] + [_cell(jsonpath(o, c["jsonPath"]), c.get("type", "string")) for c in crd_columns]
            for o in objects
        ]
    else:
        columns = [_NAME, _AGE]
        rows = [_name_age_row(o) for o in objects]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": [
            {"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                        "metadata": dict(_meta(o))}}
            for cells, o in zip(rows, objects, strict=True)
        ],
    }


def wants_table(accept: str) -> bool:
    """Whether an ``Accept`` header asks for server-side printing (what ``kubectl get`` sends)."""
    return "as=Table" in accept.replace(" ", "")

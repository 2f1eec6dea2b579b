"""The wire documents of ``external.metrics.k8s.io/v1beta1``, as an aggregated API server writes them: discovery
(``APIGroupList``, ``APIGroup``, ``APIResourceList``), ``ExternalMetricValueList``, ``Status`` errors, OpenAPI, and
the Kubernetes quantity and time formats (reference kubernetes-autoscaling.md §7; the Go types are
k8s.io/metrics/pkg/apis/external_metrics/v1beta1 and k8s.io/apimachinery/pkg/apis/meta/v1).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterable, Mapping
from typing import Any

from metrics_adapter.provider import Sample

GROUP = "external.metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
LIST_KIND = "ExternalMetricValueList"

_NANO = 1_000_000_000


def quantity(value: float) -> str:
    """A Kubernetes quantity string exactly holding ``value`` to the nano-unit: ``3``, ``350m``, ``30500u``,
    ``12n``. The HPA reads it with ``MilliValue()`` (rounded up to milli-units), so latencies keep their
    milliseconds and replica counts stay integers."""
    if not math.isfinite(value):
        raise ValueError(f"a quantity must be finite, got {value!r}")
    nanos = round(value * _NANO)
    for divisor, suffix in ((_NANO, ""), (1_000_000, "m"), (1_000, "u")):
        if nanos % divisor == 0:
            return f"{nanos // divisor}{suffix}"
    return f"{nanos}n"


def rfc3339(time_s: float) -> str:
    """``metav1.Time`` on the wire: RFC 3339 in UTC, whole seconds."""
    return datetime.datetime.fromtimestamp(time_s, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def value_list(samples: Iterable[Sample]) -> dict[str, Any]:
    items = []
    for s in samples:
        item: dict[str, Any] = {
            "metricName": s.metric,
            "metricLabels": dict(s.labels),
            "timestamp": rfc3339(s.timestamp_s),
            "value": quantity(s.value),
        }
        if s.window_s is not None and s.window_s >= 1:
            item["window"] = round(s.window_s)
        items.append(item)
    return {"kind": LIST_KIND, "apiVersion": GROUP_VERSION, "metadata": {}, "items": items}


REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def status(code: int, message: str, *, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ``metav1.Status`` failure, as the API server returns for any error."""
    doc: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        doc["details"] = dict(details)
    return doc


def _group_version() -> dict[str, str]:
    return {"groupVersion": GROUP_VERSION, "version": VERSION}


def api_group() -> dict[str, Any]:
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [_group_version()],
        "preferredVersion": _group_version(),
    }


def api_group_list() -> dict[str, Any]:
    group = api_group()
    del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}


def api_resource_list(metrics: Iterable[str]) -> dict[str, Any]:
    """One resource per served metric: namespaced, kind ExternalMetricValueList, verb get (what
    custom-metrics-apiserver's resource lister publishes)."""
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [
            {"name": m, "singularName": "", "namespaced": True, "kind": LIST_KIND, "verbs": ["get"]} for m in metrics
        ],
    }


_VALUE = "io.k8s.metrics.pkg.apis.external_metrics.v1beta1.ExternalMetricValue"
_VALUE_LIST = f"{_VALUE}List"
_VALUE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["metricName", "metricLabels", "timestamp", "value"],
    "properties": {
        "metricName": {"type": "string"},
        "metricLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "timestamp": {"type": "string", "format": "date-time"},
        "window": {"type": "integer", "format": "int64"},
        "value": {"type": "string", "description": "a Kubernetes quantity"},
    },
}
_LIST_PATH = f"/apis/{GROUP_VERSION}/namespaces/{{namespace}}/{{metric}}"


def _openapi(v3: bool) -> dict[str, Any]:
    """The one operation (list values of a metric) and its two types, as Swagger 2.0 or OpenAPI 3.0."""
    where = "#/components/schemas/" if v3 else "#/definitions/"
    schemas = {
        _VALUE: _VALUE_SCHEMA,
        _VALUE_LIST: {
            "type": "object",
            "required": ["items"],
            "properties": {
                "kind": {"type": "string"},
                "apiVersion": {"type": "string"},
                "metadata": {"type": "object"},
                "items": {"type": "array", "items": {"$ref": where + _VALUE}},
            },
            "x-kubernetes-group-version-kind": [{"group": GROUP, "version": VERSION, "kind": LIST_KIND}],
        },
    }
    string = {"type": "string"}
    params = [
        {"name": name, "in": where_, "required": where_ == "path", **({"schema": string} if v3 else string)}
        for name, where_ in (("namespace", "path"), ("metric", "path"), ("labelSelector", "query"))
    ]
    body = {"$ref": where + _VALUE_LIST}
    ok = {"description": "OK", **({"content": {"application/json": {"schema": body}}} if v3 else {"schema": body})}
    operation: dict[str, Any] = {"operationId": "listExternalMetricValue", "parameters": params,
                                 "responses": {"200": ok}}  # fmt: skip
    doc: dict[str, Any] = {"info": {"title": "pdscale external metrics", "version": VERSION},
                           "paths": {_LIST_PATH: {"get": operation}}}  # fmt: skip
    if v3:
        doc.update(openapi="3.0.0", components={"schemas": schemas})
    else:
        operation["produces"] = ["application/json"]
        doc.update(swagger="2.0", definitions=schemas)
    return doc


def openapi_v2() -> dict[str, Any]:
    """Swagger 2.0, which the aggregator merges into the cluster's /openapi/v2."""
    return _openapi(v3=False)


def openapi_v3_index() -> dict[str, Any]:
    return {"paths": {f"apis/{GROUP_VERSION}": {"serverRelativeURL": f"/openapi/v3/apis/{GROUP_VERSION}"}}}


def openapi_v3() -> dict[str, Any]:
    return _openapi(v3=True)

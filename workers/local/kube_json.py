"""A small JSON client for the Kubernetes API, for the pod runner's controllers and kubelet.

Objects stay plain dicts (the pod runner reads and writes fields the typed ``kubernetes`` models would drop, and
it only ever talks to the emulator). Resources are named like ``workers.local.kube_emulator.RESOURCES``
(``v1/pods``, ``apps/v1/deployments``). Every call has a timeout; errors raise ``KubeApiError`` with the
status and the API's message.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import Any

import requests


class KubeApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def now_iso() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _path(resource: str, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
    group_version, plural = resource.rsplit("/", 1)
    base = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


class KubeJson:
    """GET/LIST/POST/PATCH(merge)/DELETE against one API server URL, dicts in and out."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, token: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None,
              content_type: str = "application/json") -> Any:  # fmt: skip
        resp = self.session.request(method, self.url + path, json=body, params=params, timeout=self.timeout_s,
                                    headers={"Content-Type": content_type})  # fmt: skip
        if resp.status_code >= 400:
            try:
                message = resp.json().get("message", resp.text)
            except ValueError:
                message = resp.text
            raise KubeApiError(resp.status_code, str(message)[:300])
        return resp.json() if resp.content else None

    def list(self, resource: str, namespace: str | None = None, label_selector: str = "") -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        return list(self._call("GET", _path(resource, namespace), params=params).get("items") or [])

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return dict(self._call("GET", _path(resource, namespace, name)))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, resource: str, namespace: str | None, obj: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", _path(resource, namespace), dict(obj)))

    def patch(self, resource: str, namespace: str | None, name: str, body: Mapping[str, Any],
              sub: str | None = None) -> dict[str, Any]:  # fmt: skip
        return dict(self._call("PATCH", _path(resource, namespace, name, sub), dict(body),
                               content_type="application/merge-patch+json"))  # fmt: skip

    def delete(self, resource: str, namespace: str | None, name: str, grace_s: int | None = None) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_s is not None:
            body["gracePeriodSeconds"] = grace_s  # type: ignore[assignment]
        try:
            self._call("DELETE", _path(resource, namespace, name), body)
        except KubeApiError as exc:
            if exc.status != 404:
                raise

    def event(self, obj: Mapping[str, Any], reason: str, message: str, *, component: str,
              type_: str = "Normal") -> None:  # fmt: skip
        """Record a core/v1 Event about ``obj`` (what ``kubectl describe`` lists under Events)."""
        meta = obj.get("metadata") or {}
        now = now_iso()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": meta.get("namespace")},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": meta.get("name"),
                               "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component},
            "reportingComponent": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }  # fmt: skip
        self.create("v1/events", meta.get("namespace"), body)

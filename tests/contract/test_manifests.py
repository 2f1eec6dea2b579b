"""manifests/: every object validates against Kubernetes 1.37's schemas (kubernetes-validate --strict); the CRD's
own schema (OpenAPI + CEL rules, evaluated with cel-python the way the API server types them) accepts the examples
and rejects nonsense; the config loader agrees; RBAC grants exactly what the controller calls."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.cli import build_parser
from autoscaler.config import ConfigError, spec_from_dict
from autoscaler.core.types import Pool, Reason

ROOT = Path(__file__).resolve().parents[2] / "manifests"
# custom resources: ours (checked against the CRD below), the Prometheus Operator's (no schema here; their rules
# go through promtool in tests/contract/test_monitoring.py), KEDA's and cert-manager's
NOT_BUILTIN = {"Kustomization", "DisaggregatedAutoscaler", "PodMonitor", "ServiceMonitor", "PrometheusRule",
               "ScaledObject", "Certificate", "Issuer"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def all_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(ROOT.rglob("*.yaml")):
        for i, doc in enumerate(documents(path)):
            yield f"{path.relative_to(ROOT)}#{i}:{doc.get('kind')}", doc


BUILTIN = [(name, doc) for name, doc in all_documents() if doc.get("kind") not in NOT_BUILTIN]
CRD = next(doc for _, doc in all_documents() if doc.get("kind") == "CustomResourceDefinition")
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLES = [(name, doc) for name, doc in all_documents() if doc.get("kind") == "DisaggregatedAutoscaler"]


@pytest.mark.parametrize("doc", [d for _, d in BUILTIN], ids=[n for n, _ in BUILTIN])
def test_builtin_objects_validate_strict(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_strict_validation_catches_a_typo() -> None:
    """The check above can fail: a misspelt field in the controller Deployment is rejected."""
    bad = copy.deepcopy(next(d for _, d in BUILTIN if d["kind"] == "Deployment"))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, "1.37.0", strict=True)


@pytest.mark.parametrize("folder", ["base", "examples", "overlays/monitoring"])
def test_kustomization_lists_every_file(folder: str) -> None:
    kust = documents(ROOT / folder / "kustomization.yaml")[0]
    listed = {r for r in kust["resources"] if not r.startswith("..")}
    present = {p.name for p in (ROOT / folder).glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


# ---------------------------------------------------------------- the CRD schema


def _walk_schema(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for key, sub in (schema.get("properties") or {}).items():
        yield from _walk_schema(sub, f"{path}.{key}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk_schema(schema["additionalProperties"], f"{path}[*]")
    if isinstance(schema.get("items"), dict):
        yield from _walk_schema(schema["items"], f"{path}[]")


def test_crd_schema_is_structural() -> None:
    """Kubernetes rejects CRDs whose schema nodes lack a type, or that use $ref (it does not resolve them)."""
    for path, node in _walk_schema(SCHEMA):
        assert "$ref" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path or '<root>'}: no type"


def test_printer_columns_point_into_the_schema() -> None:
    known = {p for p, _ in _walk_schema(SCHEMA)}
    version = CRD["spec"]["versions"][0]
    for col in version["additionalPrinterColumns"]:
        path = col["jsonPath"].split("[")[0]
        if path.startswith(".metadata"):
            continue
        assert path in known, f"printer column {col['name']}: {col['jsonPath']} not in the schema"
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert {"P", "P-Desired", "D", "D-Desired", "TTFT", "TTFT-Target", "ITL", "ITL-Target", "Age"} <= set(names)
    assert CRD["spec"]["names"]["shortNames"] == ["pdas"]
    assert version["subresources"] == {"status": {}}


def _to_cel(schema: dict[str, Any], value: Any) -> Any:
    """Type a JSON value the way the API server does for CEL: ``number`` fields are doubles even when written
    as integers."""
    kind = schema.get("type")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        return {k: _to_cel(props.get(k, extra), v) for k, v in value.items()}
    if kind == "array" and isinstance(value, list):
        return [_to_cel(schema.get("items") or {}, v) for v in value]
    return value


def cel_violations(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """Evaluate every ``x-kubernetes-validations`` rule on the nodes present in ``value``."""
    out: list[str] = []
    env = celpy.Environment()
    for rule in schema.get("x-kubernetes-validations") or []:
        program = env.program(env.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(_to_cel(schema, value))})
        if not bool(result):
            out.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, sub in value.items():
            if key in props:
                out += cel_violations(props[key], sub, f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += cel_violations(schema["additionalProperties"], sub, f"{path}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += cel_violations(schema["items"], item, f"{path}[{i}]")
    return out


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """OpenAPI v3.0 semantics (boolean exclusiveMinimum): Draft 4 validation; unknown x- keywords are ignored."""
    validator = jsonschema.Draft4Validator(SCHEMA)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


def rejected_by(obj: dict[str, Any]) -> set[str]:
    found = set()
    if schema_errors(obj):
        found.add("schema")
    if not schema_errors(obj) and cel_violations(SCHEMA, obj):
        found.add("cel")
    try:
        spec_from_dict(obj.get("spec"), source="test")
    except ConfigError:
        found.add("loader")
    return found


@pytest.mark.parametrize("doc", [d for _, d in EXAMPLES], ids=[n for n, _ in EXAMPLES])
def test_examples_are_accepted_everywhere(doc: dict[str, Any]) -> None:
    assert schema_errors(doc) == []
    assert cel_violations(SCHEMA, doc) == []
    spec_from_dict(doc["spec"], source="example")


def _bad(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLES[0][1])
    for dotted, value in changes.items():
        node = doc
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(keys[-1], None)
        else:
            node[keys[-1]] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("doc", "rejecters"),
    [
        (_bad(spec__prefill__minReplicas=9, spec__prefill__maxReplicas=2), {"cel", "loader"}),
        (_bad(spec__decode__minReplicas=70, spec__decode__maxReplicas=_DELETE), {"cel", "loader"}),
        (_bad(spec__slo__ttft__targetSeconds=-1), {"schema", "loader"}),
        (_bad(spec__slo__itl__targetSeconds=0), {"schema", "loader"}),
        (_bad(spec__slo__ttft__percentile=100), {"schema", "loader"}),
        (_bad(spec__slo__ttft__percentile=1), {"cel", "loader"}),
        (_bad(spec__slo__ttft__percentile="p99"), {"schema"}),  # the CRD takes numbers only
        (_bad(spec__mode="turbo"), {"schema", "loader"}),
        (_bad(spec__forecaster="arima"), {"schema", "loader"}),
        (_bad(spec__metrics__source="datadog"), {"schema", "loader"}),
        (_bad(spec__metrics__selector__matchLabels={"app.kubernetes.io/name": "x"}), {"cel", "loader"}),
        (_bad(spec__metrics__queries={"ttft": "x"}), {"cel", "loader"}),
        (_bad(spec__gpuBudget=1), {"cel", "loader"}),
        (_bad(spec__gpuBudget=0), {"schema", "loader"}),
        (_bad(spec__prefill__scaleTargetRef=_DELETE), {"schema"}),  # the loader allows none; the CRD needs one
        (_bad(spec__behavior__scaleDown__policies=[]), {"schema", "loader"}),
        (_bad(spec__behavior__scaleUp__policies=[{"type": "Pods", "value": 4}]), {"schema", "loader"}),
        (_bad(spec__behavior__scaleUp__selectPolicy="Sometimes"), {"schema", "loader"}),
        (_bad(spec__podStartupSeconds=-5), {"schema", "loader"}),
        # unknown fields are pruned by a structural schema (kubectl --validate=strict rejects them); the loader
        # rejects them when it sees them
        (_bad(spec__prefill__maxReplica=3), {"loader"}),
        (_bad(spec__decode__minReplicas=0), {"schema", "loader"}),  # and the CEL rule says why: below
        (_bad(spec__decode__scaleTargetRef={"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-8b-prefill"}),
         {"cel", "loader"}),
        (_bad(spec__metrics__maxFailureRatio=0), {"schema", "loader"}),
        (_bad(spec__metrics__maxFailureRatio=1.5), {"schema", "loader"}),
    ],
    ids=[
        "min-gt-max", "min-gt-default-max", "negative-ttft-target", "zero-itl-target", "percentile-100",
        "percentile-1-ambiguous", "percentile-string", "mode-enum", "forecaster-enum", "metric-source-enum",
        "selector-key-not-a-prom-label", "queries-without-custom", "budget-below-minimums", "budget-zero",
        "no-scale-target", "empty-policies", "policy-missing-period", "select-policy-enum", "negative-startup",
        "unknown-field", "scale-to-zero", "one-target-for-both-pools", "failure-ratio-zero", "failure-ratio-above-one",
    ],
)
def test_bad_autoscalers_are_rejected(doc: dict[str, Any], rejecters: set[str]) -> None:
    assert rejected_by(doc) == rejecters


def test_scale_to_zero_is_refused_with_the_same_reason_everywhere() -> None:
    """The schema says "minimum 1"; the CEL rule and the loader say why, in the same words."""
    doc = _bad(spec__prefill__minReplicas=0)
    schema = SCHEMA["properties"]["spec"]["properties"]["prefill"]
    (cel,) = cel_violations(schema, doc["spec"]["prefill"], ".spec.prefill")
    with pytest.raises(ConfigError) as err:
        spec_from_dict(doc["spec"])
    for text in (cel, str(err.value), schema["properties"]["minReplicas"]["description"]):
        assert "scale to zero" in text.lower() or "scale-to-zero" in text.lower(), text
    for words in ("minutes to start", "no activation signal exists while a pool is at zero", "never wake it"):
        assert words in cel and words in str(err.value)


# ---------------------------------------------------------------- RBAC and the controller Deployment


def test_lease_role_is_namespaced_and_named() -> None:
    """What the code needs is derived in tests/contract/test_rbac.py; here: the Lease grant stays narrow."""
    lease_role = next(d for _, d in BUILTIN if d["kind"] == "Role" and d["metadata"]["name"] == "pdscale-leader-election")
    assert lease_role["metadata"]["namespace"] == "pdscale-system"
    named = [r for r in lease_role["rules"] if "get" in r["verbs"]]
    assert named and all(r.get("resourceNames") == ["pdscale-controller"] for r in named)
    for _, doc in BUILTIN:
        if (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "controller":
            continue  # the adapter's RBAC: tests/contract/test_adapter_manifests.py
        for rule in doc.get("rules") or []:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], doc["metadata"]["name"]


def test_controller_deployment_runs_pdscale_run() -> None:
    deploy = next(d for _, d in BUILTIN if d["kind"] == "Deployment")
    assert deploy["spec"]["replicas"] == 2
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["pdscale"]
    args = build_parser().parse_args(container["args"])  # the real CLI accepts these arguments
    assert args.command == "run" and args.all_namespaces and args.metrics_port == 8080
    assert args.lease_name == "pdscale-controller"  # the name the Role grants
    # the Prometheus connection comes from the ConfigMap named in envFrom, not from the arguments
    assert not any(a.startswith("--prometheus") for a in container["args"])
    config = next(d for _, d in BUILTIN if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pdscale-controller")
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    from autoscaler.prometheus_connection import from_args

    connection = from_args(args, environ=config["data"])
    assert connection is not None and connection.url == config["data"]["PDSCALE_PROMETHEUS_URL"]
    # read-only root filesystem: the one writable path is an emptyDir at /tmp (the image's HOME)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in deploy["spec"]["template"]["spec"]["volumes"]}
    assert mounts == {"tmp": "/tmp"} and "emptyDir" in volumes["tmp"]
    pdb = next(d for _, d in BUILTIN if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["maxUnavailable"] == 1
    probes = {container["livenessProbe"]["httpGet"]["path"], container["readinessProbe"]["httpGet"]["path"]}
    assert probes == {"/healthz", "/readyz"}
    service = next(d for _, d in BUILTIN if d["kind"] == "Service")
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == next(
        d for _, d in BUILTIN if d["kind"] == "ServiceAccount")["metadata"]["name"]


def test_status_written_by_the_controller_fits_the_crd() -> None:
    """What autoscaler.kube.build_status writes is what the status schema declares (nothing pruned)."""
    from autoscaler.controller import TickResult
    from autoscaler.core.types import (
        Decision,
        Observation,
        Pool,
        PoolDecision,
        PoolReplicas,
        PoolSignals,
        Signals,
    )
    from autoscaler.kube import AutoscalerObject, build_status

    example = EXAMPLES[0][1]
    obj = AutoscalerObject("llm", "llama-8b", "uid", 2, example, spec_from_dict(example["spec"]))
    sig = Signals(time_s=1.0, ttft_s=0.4, itl_s=0.03, request_rate_per_s=3.0, prompt_tokens_per_s=900.0,
                  output_tokens_per_s=600.0, prefill=PoolSignals(waiting_requests=2.0),
                  decode=PoolSignals(running_requests=40.0, kv_usage_fraction=0.4))
    result = TickResult(
        Observation(1.0, sig, PoolReplicas(2, 2), PoolReplicas(3, 2)),
        Decision(1.0, PoolDecision(Pool.PREFILL, 2, 3, "TTFTAboveTarget", "m"),
                 PoolDecision(Pool.DECODE, 3, 3, "WithinTarget", "m")),
        (Pool.PREFILL,),
    )
    status = build_status(obj, result=result, scaled=True, state={"prefill": {"x": 1}})
    doc = {**example, "status": status}
    assert schema_errors(doc) == []
    status_schema = SCHEMA["properties"]["status"]["properties"]
    assert set(status) <= set(status_schema)
    assert set(status["observed"]) <= set(status_schema["observed"]["properties"])


_maybe_s = st.one_of(st.none(), st.floats(0.0, 100.0, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(
    ttft=_maybe_s, itl=_maybe_s, rate=_maybe_s, error=st.one_of(st.none(), st.text(min_size=1, max_size=40)),
    reasons=st.tuples(st.sampled_from(list(Reason)), st.sampled_from(list(Reason))),
    replicas=st.tuples(*[st.integers(0, 50)] * 4), applied=st.sets(st.sampled_from(list(Pool))),
    errors=st.lists(st.text(max_size=30), max_size=2),
)
def test_any_status_fits_the_crd(ttft: float | None, itl: float | None, rate: float | None, error: str | None,
                                 reasons: tuple[Reason, Reason], replicas: tuple[int, int, int, int],
                                 applied: set[Pool], errors: list[str]) -> None:
    """Whatever the tick saw, the status has the four conditions, valid values, and fits the schema."""
    from autoscaler.controller import TickResult
    from autoscaler.core.types import Decision, Observation, PoolDecision, PoolReplicas, Signals
    from autoscaler.kube import AutoscalerObject, build_status

    example = EXAMPLES[0][1]
    obj = AutoscalerObject("llm", "x", "uid", 1, example, spec_from_dict(example["spec"]))
    sig = Signals(time_s=1.0, ttft_s=ttft, itl_s=itl, request_rate_per_s=rate, error=error)
    pc, pd, dc, dd = replicas
    result = TickResult(
        Observation(1.0, sig, PoolReplicas(pc, min(pc, pd)), PoolReplicas(dc, dc)),
        Decision(1.0, PoolDecision(Pool.PREFILL, pc, pd, reasons[0], "m"),
                 PoolDecision(Pool.DECODE, dc, dd, reasons[1], "m")),
        tuple(sorted(applied)), tuple(errors),
    )
    status = build_status(obj, result=result, scaled=bool(applied))
    assert schema_errors({**example, "status": status}) == []
    conds = {c["type"]: c for c in status["conditions"]}
    assert set(conds) == {"AbleToScale", "ScalingActive", "ScalingLimited", "SLOMet", "ExclusiveOwner"}
    if error is not None or (ttft is None and itl is None):
        assert conds["ScalingActive"]["status"] == "False"
    if errors:
        assert conds["AbleToScale"]["reason"] == "FailedUpdateScale"
    if ttft is not None and itl is not None:
        assert conds["SLOMet"]["status"] == ("True" if ttft <= 1.0 and itl <= 0.05 else "False")

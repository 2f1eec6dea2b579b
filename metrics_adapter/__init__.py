"""pdscale's External Metrics API (``external.metrics.k8s.io/v1beta1``): its SLO signals and recommendations for a
stock HPA, KEDA and dashboards.

The shape: requests are answered from a cache, never from Prometheus.

    fill (once per tick)                              cache                       serve (per request)
    ControllerFeed   <- pdscale run's own ticks  \\                          /  server: TLS, authn (front proxy,
                                                  >  ExternalMetricsCache  <     client cert, TokenReview), authz
    StandaloneRefresher <- one LIST + one grouped /   (one Snapshot, swapped     (SubjectAccessReview, cached),
      PromQL query set + desired replicas from        whole)                     selector -> lookup -> wire JSON
      the autoscalers' status

Modules, domain first (``provider`` and ``selectors`` import no HTTP, TLS, Kubernetes or Prometheus client;
import-linter checks it):

- ``selectors``: Kubernetes label selectors, parsed and matched by apimachinery's rules, with size limits.
- ``provider``: the metric catalog (names, labels), the series of each autoscaler built from a tick's signals and
  decision or from its status, the ``Snapshot`` and the cache's lookup rules (404 unknown, 503 stale/unavailable).
- ``refresh``: the two fillers, ``ControllerFeed`` (``pdscale run --serve-external-metrics``) and
  ``StandaloneRefresher`` (``pdscale adapter``); why the standalone adapter reads decisions from status instead of
  running the policy again is in its docstring.
- ``wire``: discovery, ``ExternalMetricValueList``, ``Status``, OpenAPI, quantities and times as Kubernetes writes them.
- ``auth``, ``tls``, ``server``: what makes it an aggregated API server (delegated authentication and authorization,
  serving certificate and client CAs, the aiohttp app and its thread).
- ``command``: ``pdscale adapter`` and the serving options shared with ``pdscale run``.
"""

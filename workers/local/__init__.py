"""One machine as a cluster: the Kubernetes API emulator, a real Prometheus, managed processes, the pod runner and
``pdscale up``. For trying pdscale without a cluster, and for the live-loop tests and benchmarks."""

#!/usr/bin/env python3
"""scripts/k8s-policy.py — checks on rendered tally manifests that a JSON schema cannot express.

Run by scripts/k8s-validate.sh (with the python of .tools/venv, which has PyYAML):

    k8s-policy.py --templates SECRET_TEMPLATE... -- NAME RENDERED.yaml [NAME RENDERED.yaml ...]

For every rendered kustomization:
  - every pod (Deployment, Job) runs as non-root, with the RuntimeDefault seccomp profile, and
    every container has allowPrivilegeEscalation false, readOnlyRootFilesystem true, drops ALL
    capabilities, and has resource requests and a memory limit;
  - the server Deployment (component=server) has gRPC readiness and liveness probes on the port
    it listens on, Prometheus scrape annotations, and terminationGracePeriodSeconds greater than
    its preStop sleep plus TALLY_SHUTDOWN_DRAIN_SECS from its ConfigMap;
  - every ConfigMap a pod references is part of the same output (generated names resolve), and
    every Secret referenced is `tally-secrets`, whose keys the template defines;
  - the migration Job runs `migrate up`; each container's args name a tally subcommand.
For each Secret template: placeholders only (every value contains CHANGE_ME).
Prints one line per problem and exits 1 if there is any.
"""

import sys

import yaml

SUBCOMMANDS = {"serve", "worker", "migrate", "verify", "admin", "bench"}
SERVER_PORT = 8080

problems = []


def problem(where, message):
    problems.append(f"{where}: {message}")


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def check_pod(where, spec, configmaps, secret_keys):
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        problem(where, "pod securityContext.runAsNonRoot must be true")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        problem(where, "automountServiceAccountToken must be false (tally never calls the API)")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(cw, "securityContext.allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(cw, "securityContext.readOnlyRootFilesystem must be true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problem(cw, "securityContext.capabilities.drop must include ALL")
        res = c.get("resources") or {}
        if not (res.get("requests") or {}).get("cpu") or not (res.get("requests") or {}).get(
            "memory"
        ):
            problem(cw, "resources.requests.cpu and .memory are required")
        if not (res.get("limits") or {}).get("memory"):
            problem(cw, "resources.limits.memory is required")
        args = c.get("args") or []
        if not args or args[0] not in SUBCOMMANDS:
            problem(cw, f"args must start with a tally subcommand, got {args!r}")
        for ref in c.get("envFrom") or []:
            if "configMapRef" in ref and ref["configMapRef"]["name"] not in configmaps:
                problem(cw, f"envFrom ConfigMap {ref['configMapRef']['name']!r} is not rendered")
            if "secretRef" in ref and ref["secretRef"]["name"] != "tally-secrets":
                problem(cw, f"envFrom Secret {ref['secretRef']['name']!r} is not tally-secrets")
        for env in c.get("env") or []:
            key_ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if key_ref and (
                key_ref.get("name") != "tally-secrets" or key_ref.get("key") not in secret_keys
            ):
                problem(cw, f"env {env['name']} refers to an unknown secret key {key_ref!r}")


def check_server(where, pod_meta, spec, configmaps):
    annotations = pod_meta.get("annotations") or {}
    if annotations.get("prometheus.io/scrape") != "true":
        problem(where, "pod annotation prometheus.io/scrape must be \"true\"")
    if annotations.get("prometheus.io/port") != str(SERVER_PORT):
        problem(where, f"pod annotation prometheus.io/port must be \"{SERVER_PORT}\"")
    if annotations.get("prometheus.io/path") != "/metrics":
        problem(where, "pod annotation prometheus.io/path must be /metrics")
    c = spec["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        grpc = (c.get(probe) or {}).get("grpc")
        if not grpc or grpc.get("port") != SERVER_PORT:
            problem(where, f"{probe} must be a grpc probe on port {SERVER_PORT}")
    ports = [p.get("containerPort") for p in c.get("ports") or []]
    if SERVER_PORT not in ports:
        problem(where, f"container must expose port {SERVER_PORT}")
    drain = None
    for ref in c.get("envFrom") or []:
        name = (ref.get("configMapRef") or {}).get("name")
        if name in configmaps:
            drain = configmaps[name].get("TALLY_SHUTDOWN_DRAIN_SECS", drain)
    drain = int(drain) if drain is not None else 20  # the server's default
    pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
    sleep = int(pre_stop.get("seconds", 0))
    grace = int(spec.get("terminationGracePeriodSeconds", 30))
    if grace <= sleep + drain:
        problem(
            where,
            f"terminationGracePeriodSeconds ({grace}) must exceed preStop sleep ({sleep}) + "
            f"TALLY_SHUTDOWN_DRAIN_SECS ({drain})",
        )


def check_rendered(name, path, secret_keys):
    docs = load_all(path)
    configmaps = {
        d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"
    }
    kinds = {d.get("kind") for d in docs}
    for required in (
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "Ingress",
        "Job",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ):
        if required not in kinds:
            problem(name, f"no {required} rendered")
    if "Secret" in kinds:
        problem(name, "a Secret is rendered: real secrets must not live in the kustomization")
    for d in docs:
        kind = d.get("kind")
        if kind not in ("Deployment", "Job"):
            continue
        where = f"{name} {kind}/{d['metadata']['name']}"
        template = d["spec"]["template"]
        spec = template["spec"]
        check_pod(where, spec, configmaps, secret_keys)
        component = (template.get("metadata", {}).get("labels") or {}).get(
            "app.kubernetes.io/component"
        )
        if kind == "Deployment" and component == "server":
            check_server(where, template.get("metadata", {}), spec, configmaps)
        if kind == "Job" and component == "migrate":
            if spec["containers"][0].get("args") != ["migrate", "up"]:
                problem(where, "the migration Job must run `tally migrate up`")


def main(argv):
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    sep = argv.index("--")
    templates = [a for a in argv[:sep] if a != "--templates"]
    pairs = argv[sep + 1 :]
    secret_keys = set()
    for t in templates:
        for d in load_all(t):
            if d.get("kind") != "Secret":
                problem(t, "a Secret template must contain only Secrets")
                continue
            values = dict(d.get("stringData") or {})
            values.update(d.get("data") or {})
            secret_keys.update(values)
            for key, value in values.items():
                if "CHANGE_ME" not in str(value):
                    problem(t, f"{key} must be a CHANGE_ME placeholder, never a real value")
    for key in ("DATABASE_URL", "REDIS_URL", "SMTP_URL", "TALLY_TOKEN_KEY"):
        if templates and key not in secret_keys:
            problem(",".join(templates), f"the Secret template lacks {key}")
    for i in range(0, len(pairs), 2):
        check_rendered(pairs[i], pairs[i + 1], secret_keys)
    for p in problems:
        print(f"k8s-policy.py: FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"k8s-policy.py: ok   {len(pairs) // 2} kustomization(s): security contexts, probes, "
        "grace period, references, secret template",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Consistency checks of the deploy files that no schema covers; deploy/check.sh runs it.

Usage: check.py [KUSTOMIZE_OUTPUT]. Without the output of `kubectl kustomize`, the resources the
kustomization lists are read as written. The overlays' outputs come in SPOOL_OVERLAY_OUTPUT and
PROJECTS_OVERLAY_OUTPUT. Prints one line per problem; exits 1 if there is any. PromQL is parsed
when promql_parser (PyPI) is installed; everything else needs only PyYAML. The several-projects
files have checks of their own in check_projects.py.
"""

import json
import os
import re
import sys
from pathlib import Path

import yaml

import check_projects

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
# The code of the binary: its own, the service library's, the development tools'.
BINARY_SOURCES = (ROOT / "src", ROOT / "crates" / "service" / "src", ROOT / "crates" / "devtools" / "src")
problems = []
# What could not be checked here, said after the problems.
notes = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def relay_variables():
    """Every variable the relay reads: clap's `env = "..."` in the binary's code, tracing's
    RUST_LOG, and the OpenTelemetry variables that code names in quotes ("OTEL_...")."""
    names = {"RUST_LOG"}
    for source in BINARY_SOURCES:
        for path in source.rglob("*.rs"):
            text = path.read_text()
            names.update(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', text))
            names.update(re.findall(r'"(OTEL_[A-Z0-9_]+)"', text))
    return names


VARIABLES = relay_variables()
SOURCES_NAMED = ", ".join(f"{source.relative_to(ROOT)}/" for source in BINARY_SOURCES)


def check_variables(where, names):
    for name in names:
        if name not in VARIABLES:
            problem(where, f"{name} is not a variable the relay reads (no `env = \"{name}\"` in {SOURCES_NAMED})")


# --- Dockerfile ---------------------------------------------------------------------------------
def check_dockerfile():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in ("COPY", "ADD"):
            continue
        if any(w.startswith("--from=") for w in words):
            continue
        sources = [w for w in words[1:] if not w.startswith("--")][:-1]
        for source in sources:
            if not (ROOT / source).exists():
                problem("Dockerfile", f"COPY source `{source}` does not exist in the repository")
    for required in ('ENTRYPOINT ["polyai-relay"]', 'CMD ["run"]', 'CMD ["polyai-relay", "healthcheck"]'):
        if required not in text:
            problem("Dockerfile", f"missing `{required}`")
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
        problem("Dockerfile", "the last USER must be a numeric non-root id (Kubernetes checks runAsNonRoot on it)")


# --- compose ------------------------------------------------------------------------------------
def check_compose():
    check_compose_model("deploy/compose.yaml", yaml.safe_load((DEPLOY / "compose.yaml").read_text()))
    merged = check_projects.merged_compose()
    where = "deploy/compose.yaml + compose.projects.yaml"
    check_compose_model(where, merged)
    check_projects.check_compose(where, merged, problem)
    services = merged.get("services") or {}
    caddyfile = (DEPLOY / "Caddyfile").read_text()
    for upstream in re.findall(r"reverse_proxy\s+([\w.-]+):\d+", caddyfile):
        if upstream not in services:
            problem("deploy/Caddyfile", f"reverse_proxy to `{upstream}`, which is not a compose service")


def check_compose_model(where, compose):
    services = compose.get("services") or {}
    secrets = compose.get("secrets") or {}
    for name, config in (compose.get("configs") or {}).items():
        if not (DEPLOY / config.get("file", "")).is_file():
            problem(where, f"config `{name}`: file {config.get('file')} does not exist")
    for name in ("rabbitmq", "serve", "work", "mock-api", "caddy"):
        if name not in services:
            problem(where, f"no service `{name}`")
    for name, secret in secrets.items():
        if not (DEPLOY / secret.get("file", "")).is_file():
            problem(where, f"secret `{name}`: file {secret.get('file')} does not exist")
    awaited = {dependency for service in services.values() for dependency, condition
               in (service.get("depends_on") or {}).items()
               if isinstance(condition, dict) and condition.get("condition") == "service_healthy"}
    for name, service in services.items():
        at = f"{where}: service {name}"
        if "image" not in service and "build" not in service:
            problem(at, "neither image nor build")
        relay = service.get("image", "").startswith("polyai-relay")
        if (relay or name in awaited) and "healthcheck" not in service:
            problem(at, "no healthcheck")
        build = service.get("build")
        if isinstance(build, dict):
            context = DEPLOY / build.get("context", ".")
            if not (context / build.get("dockerfile", "Dockerfile")).is_file():
                problem(at, "the build context has no such Dockerfile")
        for dependency in service.get("depends_on") or {}:
            if dependency not in services:
                problem(at, f"depends on unknown service `{dependency}`")
        for entry in service.get("configs") or []:
            source = entry if isinstance(entry, str) else entry.get("source")
            if source not in (compose.get("configs") or {}):
                problem(at, f"uses undeclared config `{source}`")
        mounted = []
        for entry in service.get("secrets") or []:
            source = entry if isinstance(entry, str) else entry.get("source")
            if source not in secrets:
                problem(at, f"uses undeclared secret `{source}`")
            mounted.append(source)
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith(".") and not (DEPLOY / source).exists():
                problem(at, f"bind mount source {source} does not exist")
        environment = service.get("environment") or {}
        if relay:
            check_variables(at, environment)
        for key, value in environment.items():
            if key.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                if str(value).removeprefix("/run/secrets/") not in mounted:
                    problem(at, f"{key} points at {value}, a secret the service does not mount")


# --- Kubernetes ---------------------------------------------------------------------------------
def kubernetes_documents(kustomize_output):
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization.get("resources", []):
        if not (K8S / resource).is_file():
            problem("deploy/kubernetes/kustomization.yaml", f"resource {resource} does not exist")
    if kustomize_output:
        text = Path(kustomize_output).read_text()
    else:
        text = "\n---\n".join((K8S / r).read_text() for r in kustomization["resources"] if (K8S / r).is_file())
    documents = [d for d in yaml.safe_load_all(text) if d]
    for generator in kustomization.get("configMapGenerator", []):
        literals = dict(line.split("=", 1) for line in generator.get("literals", []))
        check_variables(f"kustomization configMapGenerator {generator['name']}", literals)
    return documents


# RELAY_ADMIN_LISTEN's port: /healthz, /readyz and /metrics live there, not on the webhook port.
ADMIN_PORT = 9090


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def commented_keys(path):
    """The keys an example file shows commented out (`  # name: value`)."""
    return set(re.findall(r"^\s*#\s*([a-z0-9-]+):\s", path.read_text(), re.MULTILINE))


def check_deployment(where, deployment, secrets, example="secret.example.yaml"):
    """`secrets`: the keys of each Secret of `example`, by name."""
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    if not matches(spec["selector"].get("matchLabels"), labels):
        problem(where, "selector does not match the pod template's labels")
    if not pod.get("securityContext", {}).get("runAsNonRoot"):
        problem(where, "pods must set runAsNonRoot")
    # An optional item may be absent from its Secret (a previous secret, only during a
    # rotation), but its key must be one the example shows somewhere, if only commented out
    # (a key set only during a rotation must not be set by applying the example): a typo is caught.
    example_path = DEPLOY / (example if "/" in example else f"kubernetes/{example}")
    commented = commented_keys(example_path)

    def known_keys(reference):
        """The keys a reference to a Secret may name: the Secret's, and if it is optional, also
        those the example shows commented out. The Secret itself must be in the example."""
        keys = secrets.get(reference.get("name"))
        if keys is None:
            return set()
        return keys | commented if reference.get("optional") else keys

    for volume in pod.get("volumes", []):
        for source in check_projects.secret_sources(volume):
            for item in source.get("items", []):
                if item["key"] not in known_keys(source):
                    problem(where, f"mounts key `{item['key']}` of Secret {source.get('name')}, absent from {example}")
    for container in pod["containers"]:
        at = f"{where} container {container['name']}"
        if not container.get("image"):
            problem(at, "no image")
        # The health endpoints are served on the admin listener only (RELAY_ADMIN_LISTEN, 9090).
        ports = {p.get("name"): p.get("containerPort") for p in container.get("ports", [])}
        if ports.get("admin") != ADMIN_PORT:
            problem(at, f"needs a container port `admin` on {ADMIN_PORT} (RELAY_ADMIN_LISTEN)")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != path:
                problem(at, f"{probe} must GET {path}")
            if get.get("port") not in ("admin", ADMIN_PORT):
                problem(at, f"{probe} must use the admin port: the webhook listener serves only RELAY_PATH")
    annotations = spec["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") == "true" and annotations.get("prometheus.io/port") != str(ADMIN_PORT):
        problem(where, f"prometheus.io/port must be the admin port {ADMIN_PORT}: /metrics is served there only")
    for container in pod["containers"]:
        at = f"{where} container {container['name']}"
        resources = container.get("resources", {})
        if not resources.get("requests") or not resources.get("limits"):
            problem(at, "resources need requests and limits")
        env = {e["name"]: e for e in container.get("env", [])}
        check_variables(at, env)
        mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
        for name, entry in env.items():
            value = entry.get("value", "")
            if name.endswith("_FILE") and not any(value.startswith(m + "/") for m in mounts):
                problem(at, f"{name}={value} is outside every volume mount")
            reference = entry.get("valueFrom", {}).get("secretKeyRef", {})
            if reference and reference.get("key") not in known_keys(reference):
                problem(at, f"{name} reads key `{reference.get('key')}` of Secret {reference.get('name')}, absent from {example}")
    # The relay exits within 10 s of SIGTERM; the grace period also covers the preStop sleep.
    pre_stop = max((c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                    for c in pod["containers"]), default=0)
    if pod.get("terminationGracePeriodSeconds", 30) < pre_stop + 10:
        problem(where, f"terminationGracePeriodSeconds is under preStop ({pre_stop} s) + the relay's 10 s")
    return labels


def check_kubernetes(kustomize_output):
    documents = kubernetes_documents(kustomize_output)
    secrets = check_projects.secrets_of(K8S / "secret.example.yaml")
    by_kind = {}
    for document in documents:
        for field in ("apiVersion", "kind"):
            if field not in document:
                problem("deploy/kubernetes", f"a resource has no {field}")
        name = document.get("metadata", {}).get("name")
        if not name:
            problem("deploy/kubernetes", f"a {document.get('kind')} has no metadata.name")
        by_kind.setdefault(document.get("kind"), {})[name] = document
    for kind in ("Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                 "NetworkPolicy"):
        if kind not in by_kind:
            problem("deploy/kubernetes", f"no {kind}")
    pods = {}
    for name, deployment in by_kind.get("Deployment", {}).items():
        pods[name] = check_deployment(f"Deployment {name}", deployment, secrets)
    receiver = by_kind.get("Deployment", {}).get("polyai-relay-receiver")
    if not receiver:
        problem("deploy/kubernetes", "no Deployment polyai-relay-receiver")
    elif receiver["spec"].get("replicas", 1) < 2:
        problem("Deployment polyai-relay-receiver", "needs at least 2 replicas")
    for kind, path in (("Service", ("spec", "selector")), ("PodDisruptionBudget", ("spec", "selector", "matchLabels")),
                       ("NetworkPolicy", ("spec", "podSelector", "matchLabels"))):
        for name, document in by_kind.get(kind, {}).items():
            selector = document
            for step in path:
                selector = selector.get(step, {})
            if not any(matches(selector, labels) for labels in pods.values()):
                problem(f"{kind} {name}", "selects no Deployment's pods")
    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        if hpa["spec"]["scaleTargetRef"]["name"] not in pods:
            problem(f"HorizontalPodAutoscaler {name}", "scales a Deployment that does not exist")
        if hpa["spec"].get("minReplicas", 1) < 2:
            problem(f"HorizontalPodAutoscaler {name}", "minReplicas must be at least 2")
    services = by_kind.get("Service", {})
    for name, service in services.items():
        for port in service["spec"].get("ports", []):
            if port.get("targetPort") in ("admin", ADMIN_PORT):
                problem(f"Service {name}", "exposes the admin port; /metrics and the probes are not for the ingress")
    for name, ingress in by_kind.get("Ingress", {}).items():
        if not ingress["spec"].get("tls"):
            problem(f"Ingress {name}", "no TLS")
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                service = services.get(backend["name"])
                ports = [p.get("name") for p in (service or {}).get("spec", {}).get("ports", [])]
                if service is None or backend["port"].get("name", ports[0] if ports else None) not in ports:
                    problem(f"Ingress {name}", f"backend {backend['name']}:{backend['port']} is no Service port")


# --- kubernetes-spool/ ----------------------------------------------------------------------------
SPOOL = DEPLOY / "kubernetes-spool"
SPOOL_VARIABLES = {"RELAY_SPOOL_DIR", "RELAY_SPOOL_MAX"}


def check_spool_overlay(kustomize_output, base_output):
    """The overlay's receiver is a StatefulSet running the base's pod plus a volume for the spool."""
    where = "deploy/kubernetes-spool"
    if kustomize_output:
        documents = [d for d in yaml.safe_load_all(Path(kustomize_output).read_text()) if d]
    else:
        documents = [yaml.safe_load((SPOOL / "receiver-statefulset.yaml").read_text())]
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document.get("kind"), {})[document["metadata"]["name"]] = document
    receiver = by_kind.get("StatefulSet", {}).get("polyai-relay-receiver")
    if not receiver:
        problem(where, "no StatefulSet polyai-relay-receiver")
        return
    check_deployment(f"{where} StatefulSet", receiver, check_projects.secrets_of(K8S / "secret.example.yaml"))
    if kustomize_output:
        if "polyai-relay-receiver" in by_kind.get("Deployment", {}):
            problem(where, "the base's receiver Deployment is still there beside the StatefulSet")
        # Scaling in strands the events spooled on the removed pods' volumes (kustomization.yaml).
        for name in by_kind.get("HorizontalPodAutoscaler", {}):
            problem(f"{where} HorizontalPodAutoscaler {name}", "an autoscaler would strand spooled events on scale-in")
    claims = {t["metadata"]["name"] for t in receiver["spec"].get("volumeClaimTemplates", [])}
    container = receiver["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    spool_dir = env.get("RELAY_SPOOL_DIR", "")
    if not any(name in claims and spool_dir.startswith(path + "/") for name, path in mounts.items()):
        problem(where, f"RELAY_SPOOL_DIR={spool_dir} is not inside a volume of a volumeClaimTemplate")
    base = next((d for d in kubernetes_documents(base_output)
                 if d.get("kind") == "Deployment" and d["metadata"]["name"] == "polyai-relay-receiver"), None)
    if base:
        theirs = dict(base["spec"]["template"]["spec"]["containers"][0])
        ours = dict(container)
        ours["env"] = [e for e in ours.get("env", []) if e["name"] not in SPOOL_VARIABLES]
        ours["volumeMounts"] = [m for m in ours.get("volumeMounts", []) if m["name"] not in claims]
        for key in sorted(set(theirs) | set(ours)):
            if theirs.get(key) != ours.get(key):
                problem(where, f"the receiver's `{key}` differs from deploy/kubernetes/receiver.yaml; keep them in step")


# --- kubernetes-projects/ -------------------------------------------------------------------------
def base_settings():
    """The literals of the base's ConfigMap polyai-relay-config."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for generator in kustomization.get("configMapGenerator", []):
        if generator["name"] == "polyai-relay-config":
            return dict(line.split("=", 1) for line in generator.get("literals", []))
    return {}


def check_projects_overlay(kustomize_output, base_output):
    """The base with a projects file: the Deployments' checks, then check_projects.py's."""
    where = "deploy/kubernetes-projects"
    overlay = check_projects.OVERLAY
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    for generator in kustomization.get("configMapGenerator", []):
        literals = dict(line.split("=", 1) for line in generator.get("literals", []))
        check_variables(f"{where} configMapGenerator {generator['name']}", literals)
        for file in generator.get("files", []):
            if not (overlay / file).is_file():
                problem(where, f"configMapGenerator {generator['name']}: file {file} does not exist")
    for patch in kustomization.get("patches", []):
        if "path" in patch and not (overlay / patch["path"]).is_file():
            problem(where, f"patch {patch['path']} does not exist")
    if not kustomize_output:
        notes.append(f"{where} not checked past its files: that needs `kubectl kustomize`")
        return
    documents = [d for d in yaml.safe_load_all(Path(kustomize_output).read_text()) if d]
    secrets = check_projects.secrets_of(overlay / "secret.example.yaml")
    for document in documents:
        if document.get("kind") == "Deployment":
            name = document["metadata"]["name"]
            check_deployment(f"{where} Deployment {name}", document, secrets, "kubernetes-projects/secret.example.yaml")
    check_projects.check_kubernetes(documents, base_settings(), problem)
    check_projects.check_against_base(documents, kubernetes_documents(base_output), problem)


# --- dashboard and alerts -----------------------------------------------------------------------
try:
    import promql_parser
except ImportError:  # the structural checks still run
    promql_parser = None


def check_promql(where, expr):
    if promql_parser is None:
        return
    # Grafana's variables, replaced by values of the right kind.
    expr = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
    expr = re.sub(r"\$\{?\w+\}?", ".*", expr)
    try:
        promql_parser.parse(expr)
    except Exception as error:  # the parser's error type is not exported
        problem(where, f"PromQL does not parse: {error}")


def check_dashboard():
    where = "deploy/grafana/polyai-relay.json"
    dashboard = json.loads((DEPLOY / "grafana" / "polyai-relay.json").read_text())
    for field in ("uid", "title", "panels", "schemaVersion"):
        if field not in dashboard:
            problem(where, f"no {field}")
    ids = [p.get("id") for p in dashboard.get("panels", [])]
    if len(ids) != len(set(ids)):
        problem(where, "panel ids repeat")
    for panel in dashboard.get("panels", []):
        if "gridPos" not in panel:
            problem(where, f"panel {panel.get('title')} has no gridPos")
        for target in panel.get("targets", []):
            check_promql(f"{where} panel {panel.get('title')!r}", target.get("expr", ""))


REQUIRED_ALERTS = {"RelayDeadLettersGrowing", "RelayAckLatencyHigh", "RelayVerifyFailuresSpiking",
                   "RelayNotReady", "RelayApiKeyRefused"}


def check_alerts():
    where = "deploy/prometheus/alerts.yaml"
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    names = set()
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            at = f"{where} {rule.get('alert') or rule.get('record')}"
            names.add(rule.get("alert"))
            if not rule.get("expr"):
                problem(at, "no expr")
            check_promql(at, rule.get("expr", ""))
            if "for" in rule and not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", str(rule["for"])):
                problem(at, f"`for: {rule['for']}` is not a Prometheus duration")
            if "alert" in rule and (not rule.get("labels", {}).get("severity")
                                    or not rule.get("annotations", {}).get("summary")):
                problem(at, "needs labels.severity and annotations.summary")
    for missing in sorted(REQUIRED_ALERTS - names):
        problem(where, f"no alert {missing}")


def main():
    check_dockerfile()
    check_compose()
    check_kubernetes(sys.argv[1] if len(sys.argv) > 1 else None)
    check_spool_overlay(os.environ.get("SPOOL_OVERLAY_OUTPUT") or None, sys.argv[1] if len(sys.argv) > 1 else None)
    check_projects_overlay(os.environ.get("PROJECTS_OVERLAY_OUTPUT") or None, sys.argv[1] if len(sys.argv) > 1 else None)
    check_dashboard()
    check_alerts()
    for line in problems:
        print(f"  {line}")
    if promql_parser is None:
        notes.append("PromQL not parsed: promql_parser is not installed")
    for line in notes:
        print(f"  ({line})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

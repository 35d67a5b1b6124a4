"""Checks of the several-projects deploy files (README "Several projects"); check.py runs them.

compose.projects.yaml is an override of compose.yaml. It is merged here by Compose's rules (the
part of them these files use, `!reset` and `!override` included), so the schema and the checks
see what `docker compose -f compose.yaml -f compose.projects.yaml` runs. `python3
check_projects.py merge-compose` prints that merged file, for the schema validator.

What is checked, in compose and in kubernetes-projects/: no one-project variable beside
RELAY_PROJECTS_FILE (the relay refuses them); the projects file is mounted where the variable
says; every secret file a project names, of those the container's command reads, is mounted
there from a secret that exists; and the mock's tenants match the projects they stand in for.
The relay's own checks of the projects files run in `cargo test` (tests/api/deploy.rs).
"""

import re
import sys
import tomllib
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SERVICE_CONFIG = ROOT / "crates" / "service" / "src" / "config"
OVERLAY = DEPLOY / "kubernetes-projects"
PROJECTS_VARIABLE = "RELAY_PROJECTS_FILE"

# The fields of a [[project]] each command reads (crates/service/src/config/receiver_args.rs, api_args.rs).
WEBHOOK_FIELDS = ("webhook_secret_file", "webhook_secret_previous_file")
API_FIELDS = ("api_key_file", "platform_api_key_file")
FIELDS_READ = {"serve": WEBHOOK_FIELDS, "work": API_FIELDS, "run": WEBHOOK_FIELDS + API_FIELDS}


def refused_variables():
    """The one-project variables the relay refuses beside a projects file: the names listed in
    each `fn refuse_env_project` of the service's configuration (crates/service/src/config/)."""
    names = set()
    for path in SERVICE_CONFIG.glob("*.rs"):
        for body in re.findall(r"fn refuse_env_project\(.*?\n    \}\n", path.read_text(), re.S):
            names.update(re.findall(r'\("([A-Z0-9_]+)",', body))
    if not names:
        raise SystemExit(f"check_projects.py: no `fn refuse_env_project` found in {SERVICE_CONFIG.relative_to(ROOT)}/")
    return names


REFUSED = refused_variables()


def command_of(args):
    """`serve`, `work` or `run` (the image's CMD) from a container's arguments."""
    words = [a for a in (args or []) if not str(a).startswith("-")]
    return str(words[0]) if words else "run"


def project_list(text, where, problem):
    try:
        projects = tomllib.loads(text).get("project", [])
    except tomllib.TOMLDecodeError as error:
        problem(where, f"not valid TOML: {error}")
        return []
    if not projects:
        problem(where, "lists no [[project]]")
    return projects


def default_path(project):
    return project.get("path", f"/polyai-events/{project.get('name')}")


# --- compose: merging an override ------------------------------------------------------------
class _Reset:
    """`!reset`: removes the attribute from what the earlier files said."""


RESET = _Reset()


class Override:
    """`!override VALUE`: replaces what the earlier files said instead of merging with it."""

    def __init__(self, value):
        self.value = value


class ComposeLoader(yaml.SafeLoader):
    pass


def _construct_override(loader, node):
    if isinstance(node, yaml.MappingNode):
        return Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return Override(loader.construct_sequence(node, deep=True))
    return Override(loader.construct_scalar(node))


ComposeLoader.add_constructor("!reset", lambda loader, node: RESET)
ComposeLoader.add_constructor("!override", _construct_override)

# Sequences Compose replaces rather than appends to, and those whose items are unique by a key.
REPLACED = {("command",), ("entrypoint",), ("healthcheck", "test")}
UNIQUE = {"ports", "volumes", "secrets", "configs"}


def _plain(value):
    """`value` without tags, as a file that adds it (with nothing to merge with) means it."""
    if isinstance(value, Override):
        return _plain(value.value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not RESET}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _unique_key(item):
    if isinstance(item, dict):
        return item.get("target") or item.get("source")
    return str(item).split(":")[-1] if ":" in str(item) else item


def merge(base, override, path=()):
    if isinstance(override, Override):
        return _plain(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is RESET:
                merged.pop(key, None)
            else:
                merged[key] = merge(merged[key], value, path + (key,)) if key in merged else _plain(value)
        return merged
    if isinstance(base, list) and isinstance(override, list):
        if any(path[-len(r):] == r for r in REPLACED):
            return _plain(override)
        if path and path[-1] in UNIQUE:
            added = {_unique_key(item): item for item in _plain(override)}
            return [added.pop(_unique_key(item), item) for item in base] + list(added.values())
        return base + _plain(override)
    return _plain(override)


def merged_compose(files=("compose.yaml", "compose.projects.yaml")):
    model = {}
    for name in files:
        model = merge(model, yaml.load((DEPLOY / name).read_text(), Loader=ComposeLoader) or {})
    return model


# --- compose: the projects of a service ----------------------------------------------------------
def check_compose(where, model, problem):
    services = model.get("services") or {}
    configs = model.get("configs") or {}
    secrets = model.get("secrets") or {}
    served = {}
    for name, service in services.items():
        environment = service.get("environment") or {}
        if PROJECTS_VARIABLE not in environment:
            continue
        at = f"{where}: service {name}"
        for variable in sorted(REFUSED & set(environment)):
            problem(at, f"{variable} is set beside {PROJECTS_VARIABLE}; the relay refuses it")
        target = str(environment[PROJECTS_VARIABLE])
        mounted = {(c.get("target") if isinstance(c, dict) else f"/{c}"): (c.get("source") if isinstance(c, dict) else c)
                   for c in service.get("configs") or []}
        source = configs.get(mounted.get(target), {})
        if not source.get("file") or not (DEPLOY / source["file"]).is_file():
            problem(at, f"{PROJECTS_VARIABLE}={target} is not a mounted config with a file")
            continue
        file_where = f"deploy/{PurePosixPath(source['file'])}"
        projects = project_list((DEPLOY / source["file"]).read_text(), file_where, problem)
        in_service = {(s.get("target") or s.get("source")) if isinstance(s, dict) else s
                      for s in service.get("secrets") or []}
        for project in projects:
            for field in FIELDS_READ[command_of(service.get("command"))]:
                path = project.get(field)
                if path is None:
                    continue
                secret = str(path).removeprefix("/run/secrets/")
                if secret not in in_service or secret not in secrets:
                    problem(at, f"project `{project.get('name')}`: {field} {path} is not a secret this service mounts")
        served[name] = projects
    relay_projects = next(iter(served.values()), [])
    if relay_projects and "mock-api" in services:
        check_mock_tenants(f"{where}: service mock-api", services["mock-api"], relay_projects, problem)


def check_mock_tenants(at, mock, projects, problem):
    """Each project has a tenant with its ids, key and secret, emitting into its path."""
    environment = mock.get("environment") or {}
    mounted = {s if isinstance(s, str) else s.get("target") or s.get("source") for s in mock.get("secrets") or []}
    tenants = {}
    for spec in str(environment.get("MOCK_API_TENANTS", "")).split(";"):
        fields = dict(item.strip().split("=", 1) for item in spec.split(",") if "=" in item)
        if fields:
            tenants[fields.get("name")] = fields
        for field in ("key-file", "emit-secret-file", "platform-key-file"):
            if field in fields and fields[field].removeprefix("/run/secrets/") not in mounted:
                problem(at, f"tenant `{fields.get('name')}`: {field} {fields[field]} is not a secret it mounts")
    for project in projects:
        name = project.get("name")
        tenant = tenants.get(name)
        if tenant is None:
            problem(at, f"no tenant `{name}` in MOCK_API_TENANTS for project `{name}`")
            continue
        expected = {"account": project.get("account_id"), "project": project.get("project_id"),
                    "key-file": project.get("api_key_file"), "emit-secret-file": project.get("webhook_secret_file")}
        for field, value in expected.items():
            if tenant.get(field) != value:
                problem(at, f"tenant `{name}`: {field} is {tenant.get(field)}, project `{name}` has {value}")
        emit_to = tenant.get("emit-to", "")
        if emit_to and not emit_to.endswith(default_path(project)):
            problem(at, f"tenant `{name}` emits to {emit_to}, not project `{name}`'s path {default_path(project)}")


# --- Kubernetes: the overlay -------------------------------------------------------------------
def secret_sources(volume):
    """The Secrets a volume shows, plain or projected, each with `name`, `items`, `optional`."""
    sources = [s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s]
    if "secret" in volume:
        sources.append(dict(volume["secret"], name=volume["secret"].get("secretName")))
    return sources


def mounted_files(pod, container):
    """Every file the container sees from a Secret: path -> (secret name, key, optional)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {}
    for mount in container.get("volumeMounts", []):
        for source in secret_sources(volumes.get(mount["name"], {})):
            for item in source.get("items", []):
                path = f"{mount['mountPath']}/{item['path']}"
                files[path] = (source.get("name"), item["key"], bool(source.get("optional")))
    return files


def config_map_file(pod, container, path, config_maps):
    """The text of the ConfigMap key the container sees at `path`, or None."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        name = volumes.get(mount["name"], {}).get("configMap", {}).get("name")
        prefix = mount["mountPath"].rstrip("/") + "/"
        if name in config_maps and path.startswith(prefix):
            return config_maps[name].get("data", {}).get(path.removeprefix(prefix))
    return None


def check_kubernetes(documents, base_literals, problem):
    """`documents`: the overlay as kustomize builds it (check.py checks its Secret keys)."""
    where = "deploy/kubernetes-projects"
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document.get("kind"), {})[document["metadata"]["name"]] = document
    config_maps = by_kind.get("ConfigMap", {})
    settings = next((c.get("data", {}) for n, c in config_maps.items() if n.startswith("polyai-relay-config")), {})
    expected = {k: v for k, v in base_literals.items() if k not in REFUSED}
    expected[PROJECTS_VARIABLE] = settings.get(PROJECTS_VARIABLE)
    differs = sorted(k for k in set(settings) | set(expected) if settings.get(k) != expected.get(k))
    if differs or not settings.get(PROJECTS_VARIABLE):
        problem(where, f"polyai-relay-config must be the base's settings without {sorted(REFUSED & set(base_literals))}, "
                       f"with {PROJECTS_VARIABLE}; keep them in step (differs in {differs or [PROJECTS_VARIABLE]})")
    projects_file = settings.get(PROJECTS_VARIABLE, "")
    paths = set()
    for name, deployment in by_kind.get("Deployment", {}).items():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            at = f"{where} Deployment {name} container {container['name']}"
            env = {e["name"] for e in container.get("env", [])}
            for variable in sorted(REFUSED & env):
                problem(at, f"{variable} is set beside {PROJECTS_VARIABLE}; the relay refuses it")
            files = mounted_files(pod, container)
            text = config_map_file(pod, container, projects_file, config_maps)
            if text is None:
                problem(at, f"{PROJECTS_VARIABLE}={projects_file} is no file of a mounted ConfigMap")
                continue
            for project in project_list(text, f"{where}/projects.toml", problem):
                paths.add(default_path(project))
                for field in FIELDS_READ[command_of(container.get("args"))]:
                    path = project.get(field)
                    if path is None:
                        continue
                    mounted = files.get(path)
                    if mounted is None:
                        problem(at, f"project `{project.get('name')}`: {field} {path} is no mounted Secret key")
                    elif mounted[2] and field not in ("webhook_secret_previous_file",):
                        problem(at, f"project `{project.get('name')}`: {field} comes from an optional item; "
                                    "a missing key must keep the pod from starting")
    for name, ingress in by_kind.get("Ingress", {}).items():
        routes = [(p["path"], p["pathType"]) for r in ingress["spec"].get("rules", [])
                  for p in r.get("http", {}).get("paths", [])]
        for path in sorted(paths):
            if not any(path == route or (kind == "Prefix" and path.startswith(route.rstrip("/") + "/"))
                       for route, kind in routes):
                problem(f"{where} Ingress {name}", f"routes no project path {path}")


def _unhashed(value):
    """`value` with kustomize's hash suffixes taken off ConfigMap names, which differ by build."""
    if isinstance(value, dict):
        return {k: _unhashed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unhashed(v) for v in value]
    return re.sub(r"^(polyai-relay-[a-z-]+)-[a-z0-9]{10}$", r"\1", value) if isinstance(value, str) else value


def check_against_base(documents, base_documents, problem):
    """The overlay's containers are the base's, less the refused variables, plus the projects
    file's mount: nothing else of the base (a variable, a probe) is lost by a patch."""
    base = {d["metadata"]["name"]: d for d in base_documents if d.get("kind") == "Deployment"}
    for ours in (d for d in documents if d.get("kind") == "Deployment"):
        name = ours["metadata"]["name"]
        theirs = base.get(name)
        if theirs is None:
            problem(f"deploy/kubernetes-projects Deployment {name}", "is not in the base")
            continue
        pairs = zip(theirs["spec"]["template"]["spec"]["containers"], ours["spec"]["template"]["spec"]["containers"])
        for base_container, container in pairs:
            expected = dict(base_container)
            expected["env"] = [e for e in base_container.get("env", []) if e["name"] not in REFUSED]
            mounts = [m for m in container.get("volumeMounts", []) if m["name"] != "projects"]
            actual = dict(container, volumeMounts=mounts)
            for key in sorted(set(expected) | set(actual)):
                if _unhashed(expected.get(key)) != _unhashed(actual.get(key)):
                    problem(f"deploy/kubernetes-projects Deployment {name}",
                            f"the container's `{key}` differs from the base's by more than the projects file; keep them in step")


def secrets_of(path):
    """Secret name -> its keys, of every Secret in an example file."""
    found = {}
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("kind") == "Secret":
            found[document["metadata"]["name"]] = set(document.get("stringData", {})) | set(document.get("data", {}))
    return found


if __name__ == "__main__":
    if sys.argv[1:] == ["merge-compose"]:
        yaml.safe_dump(merged_compose(), sys.stdout, sort_keys=False)
    else:
        raise SystemExit("usage: check_projects.py merge-compose")

#!/usr/bin/env bash
# Validates the deploy files as far as a machine without a container engine or a cluster can:
#   Dockerfile      hadolint; every COPY source exists
#   compose.yaml    `docker compose config` where the compose plugin runs, else the Compose
#                   Specification's JSON schema; referenced files, secrets, services, variables;
#                   the same of compose.yaml merged with compose.projects.yaml (several projects)
#   Caddyfile       `caddy adapt --validate` (Debian's caddy, installed if missing and possible)
#   kubernetes/     `kubectl kustomize`, then Kubernetes' schemas (strict: unknown fields fail);
#   kubernetes-spool/   the same for the overlay with the receiver's spool (a StatefulSet), and
#                   that its pod stays the base's apart from the spool's volume and settings
#                   probes, resources, secret keys, selectors, grace period, variables
#   kubernetes-projects/   the same for the overlay with a projects file, that its pods stay the
#                   base's apart from the projects, and that every secret file a project names
#                   is mounted
#   grafana/, prometheus/   JSON and YAML structure; every PromQL expression parses
# The metric names in the dashboard and the alerts are checked by `cargo test` (tests/api/deploy.rs).
#
# Tools come from PyPI (deploy/requirements.txt) into a venv cached between runs. Without the
# registry, the checks that need only PyYAML still run and the others say they were skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# Kubernetes version the manifests must be valid for: preStop's sleep action needs 1.30.
KUBERNETES_VERSION=1.30.0
VENV="${DEPLOY_CHECK_VENV:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/polyai-relay/deploy-check-venv}"
REQUIREMENTS=deploy/requirements.txt
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
failed=0

step() { echo "deploy check: $*"; }
fail() {
  echo "deploy check: FAILED: $*" >&2
  failed=1
}

# Reinstalls only when the requirements changed since the venv was made.
install_tools() {
  if [[ -x "$VENV/bin/python" ]] && cmp -s "$REQUIREMENTS" "$VENV/.requirements"; then
    return 0
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS" &&
    cp "$REQUIREMENTS" "$VENV/.requirements"
}

if install_tools; then
  PYTHON="$VENV/bin/python"
  TOOLS="$VENV/bin"
else
  echo "deploy check: warning: cannot install the tools of $REQUIREMENTS; schema checks are skipped" >&2
  PYTHON=python3
  TOOLS=""
fi

step "Dockerfile"
if [[ -n "$TOOLS" ]]; then
  "$TOOLS/hadolint" Dockerfile || fail "hadolint Dockerfile"
elif command -v hadolint >/dev/null 2>&1; then
  hadolint Dockerfile || fail "hadolint Dockerfile"
else
  echo "deploy check: hadolint is not available; lint skipped" >&2
fi

step "compose"
if docker compose version >/dev/null 2>&1; then
  docker compose -f deploy/compose.yaml config -q || fail "docker compose config"
  docker compose -f deploy/compose.yaml -f deploy/compose.projects.yaml config -q ||
    fail "docker compose config with compose.projects.yaml"
elif [[ -n "$TOOLS" ]]; then
  # No compose plugin here (only the docker client): the specification's schema instead, of
  # compose.yaml and of its merge with the override (which the schema validator cannot read alone:
  # it does not know Compose's !reset and !override tags).
  "$TOOLS/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml || fail "compose schema"
  if "$PYTHON" deploy/check_projects.py merge-compose >"$WORK/compose-projects.yaml"; then
    "$TOOLS/check-jsonschema" --builtin-schema vendor.compose-spec "$WORK/compose-projects.yaml" ||
      fail "compose schema of compose.yaml with compose.projects.yaml"
  else
    fail "merging compose.projects.yaml into compose.yaml"
  fi
else
  echo "deploy check: no compose plugin and no schema validator; compose checked by structure only" >&2
fi

step "Caddyfile"
# Debian's caddy (older than the caddy:2 image, same Caddyfile syntax here); best effort.
if ! command -v caddy >/dev/null 2>&1 && [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  { timeout 120 apt-get install -y -qq caddy ||
    { timeout 120 apt-get update -qq && timeout 120 apt-get install -y -qq caddy; }; } >/dev/null 2>&1 || true
fi
if command -v caddy >/dev/null 2>&1; then
  RELAY_DOMAIN=localhost caddy adapt --config deploy/Caddyfile --adapter caddyfile --validate >/dev/null 2>"$WORK/caddy.log" ||
    { cat "$WORK/caddy.log" >&2; fail "caddy adapt deploy/Caddyfile"; }
else
  echo "deploy check: caddy is not available; the Caddyfile is checked for its upstream only" >&2
fi

# kustomize NAME: `kubectl kustomize deploy/NAME` into $WORK/NAME.yaml; sets `kustomized` to that
# file, or to nothing without kubectl or when the build fails.
kustomize() {
  kustomized=""
  command -v kubectl >/dev/null 2>&1 || return 0
  if kubectl kustomize "deploy/$1" >"$WORK/$1.yaml"; then
    kustomized="$WORK/$1.yaml"
  else
    fail "kubectl kustomize deploy/$1"
  fi
}

# validate WHAT FILE...: the FILEs against Kubernetes' schemas (strict: unknown fields fail),
# where the tools could be installed; WHAT names them in the failure.
validate() {
  local what=$1
  shift
  [[ -n "$TOOLS" ]] || return 0
  "$TOOLS/kubernetes-validate" --strict --quiet -k "$KUBERNETES_VERSION" "$@" ||
    fail "$what (version $KUBERNETES_VERSION)"
}

step "kubernetes"
kustomize kubernetes
built=$kustomized
if ! command -v kubectl >/dev/null 2>&1; then
  echo "deploy check: kubectl is not available; the kustomization's resources are read as written" >&2
fi
if [[ -n "$built" ]]; then
  manifests=("$built" deploy/kubernetes/secret.example.yaml)
else
  manifests=()
  for file in deploy/kubernetes/*.yaml; do
    [[ $file == */kustomization.yaml ]] || manifests+=("$file")
  done
fi
validate "Kubernetes schemas" "${manifests[@]}"

step "kubernetes spool overlay"
kustomize kubernetes-spool
spool_built=$kustomized
[[ -z "$spool_built" ]] || validate "Kubernetes schemas of the spool overlay" "$spool_built"

step "kubernetes projects overlay"
kustomize kubernetes-projects
projects_built=$kustomized
[[ -z "$projects_built" ]] ||
  validate "Kubernetes schemas of the projects overlay" "$projects_built" deploy/kubernetes-projects/secret.example.yaml

step "consistency of all the files, dashboard and alerts"
SPOOL_OVERLAY_OUTPUT="$spool_built" PROJECTS_OVERLAY_OUTPUT="$projects_built" \
  "$PYTHON" deploy/check.py ${built:+"$built"} || fail "deploy/check.py"

if [[ $failed -ne 0 ]]; then
  echo "deploy check: failed" >&2
  exit 1
fi
echo "deploy check: all passed"

#!/usr/bin/env python3
"""Checks what the orderflow Helm chart renders, and the image it deploys.

No cluster runs here, so this is what can be proven without one: the chart is rendered with
`helm template` under several value sets (defaults, ci/all-features-values.yaml, existing
Secrets, features off) and the manifests are parsed and checked for the facts that matter in
production: probes, security context, resources, env wiring, hooks, autoscalers, policies,
monitors, the helm test pod, no credential outside a Secret; the custom resources (KEDA
ScaledObject, ServiceMonitor, PodMonitor) for their CRDs' required and documented fields. The
optional features (authentication, traces, TLS/SASL to the dependencies) must show exactly the
variables their values call for, and every credential and certificate must be a read-only
mounted file that the *_FILE variable (or ssl.ca.location, or the URL's sslrootcert) names.

The chart cannot drift from the binaries: what each binary reads (its `#[arg(long, env =
"ORDERFLOW_…")]` settings, following `#[command(flatten)]` from its `Config::parse()`) is read out
of the Rust sources with regular expressions, no compiling, and every ORDERFLOW_* variable or
--flag a container gets must be one its binary reads (OTEL_* ones: its clap settings, those
telemetry/src/setup.rs reads, or the OpenTelemetry SDK's, pinned to the Cargo.lock version);
the readiness service names and the KEDA topics must be those of proto/. values.schema.json must reject bad values (its `config` keys are
the variables the binaries read). deploy/Dockerfile is checked statically (multi-stage, non-root,
the four binaries). The Grafana dashboard (dashboards/orderflow.json) must be valid JSON whose
every panel queries Prometheus through $datasource and whose PromQL names only metrics that
telemetry/src/metrics.rs registers (as prometheus-client exposes them); it must hold the queries of
docs/operations.md and RED panels for every RPC of proto/; its ConfigMap renders only when
grafanaDashboard.enabled, with the sidecar's label and the file's JSON unchanged.

Usage: check_chart.py --helm PATH/TO/helm   (scripts/check-chart.sh runs it)
Prints `chart checks: N passed, M failed`; exits 1 when any check fails, listing every failure.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "orderflow"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
CARGO_TOML = ROOT / "Cargo.toml"
CARGO_LOCK = ROOT / "Cargo.lock"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
KUBE_VERSION = "1.30.0"
RELEASE = "shop"
NAMESPACE = "orderflow"
PREFIX = f"{RELEASE}-orderflow"

# component (= its binary) → (values key, gRPC port, listen variable, readiness service, has a Service)
COMPONENTS = {
    "order-api": ("orderApi", 50051, "ORDERFLOW_ORDER_API_LISTEN", "orderflow.order.v1.OrderService", True),
    "inventory-svc": ("inventorySvc", 50052, "ORDERFLOW_INVENTORY_LISTEN", "orderflow.inventory.v1.InventoryService", True),
    "notify-svc": ("notifySvc", 50053, "ORDERFLOW_NOTIFY_LISTEN", "orderflow.notify.v1.NotificationService", True),
    "consumer-worker": ("consumerWorker", 50054, "ORDERFLOW_WORKER_LISTEN", "orderflow.consumer.v1.ConsumerStatusService", False),
}
API_SERVICES = [c for c, spec in COMPONENTS.items() if spec[4]]
# PostgreSQL schema → (the binary its migration Job runs with --migrate-only, the services that work
# in it): each gets the schema's URL (postgresql.schemas.<schema>, else the default postgresql.url /
# existingSecret). check_sources reads the same out of the Rust sources.
SCHEMAS = {
    "orders": ("order-api", ("order-api", "consumer-worker")),
    "inventory": ("inventory-svc", ("inventory-svc",)),
    "notify": ("notify-svc", ("notify-svc",)),
}
COMPONENT_SCHEMA = {component: schema for schema, (_, components) in SCHEMAS.items() for component in components}
STANDARD_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
]
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PodMonitor"}
# Credentials in ci/all-features-values.yaml and in the schema-roles scenario: they may appear in
# Secrets only.
ALL_FEATURES_SECRETS = ["ci-Pg-Passw0rd", "ci-Orders-Passw0rd", "ci-Redis-Passw0rd", "ci-Webhook-S3cret"]
SCHEMA_ROLE_SECRETS = ["Orders-Owner-Pw", "Inventory-Owner-Pw", "Notify-Owner-Pw"]
URL_WITH_PASSWORD = re.compile(r"://[^/\s@:]*:[^/\s@]+@")


class Checker:
    """Counts checks and collects failures (each names its scenario and object)."""

    def __init__(self) -> None:
        self.passed = 0
        self.failures: list[str] = []
        self.scenario = ""

    def check(self, condition: bool, message: str) -> bool:
        if condition:
            self.passed += 1
        else:
            self.failures.append(f"[{self.scenario}] {message}")
        return bool(condition)


class Render:
    """One `helm template` output, indexed by kind and name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.docs = [d for d in yaml.safe_load_all(text) if d]

    def kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict | None:
        for d in self.kind(kind):
            if d["metadata"]["name"] == name:
                return d
        return None

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.kind(kind)}


def helm(helm_bin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([helm_bin, *args], capture_output=True, text=True, check=False)


def render(helm_bin: str, *value_args: str, release: str = RELEASE) -> Render:
    out = helm(helm_bin, "template", release, str(CHART), "--namespace", NAMESPACE,
               "--kube-version", KUBE_VERSION, *value_args)
    if out.returncode != 0:
        raise SystemExit(f"helm template {' '.join(value_args)} failed:\n{out.stderr}")
    return Render(out.stdout)


def deep_merge(base: dict, override: dict) -> dict:
    """Helm's merge of values: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def chart_values(*overrides: dict) -> dict:
    """values.yaml with `overrides` merged over it, in order: the values a render used."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for override in overrides:
        values = deep_merge(values, override)
    return values


# The value sets rendered besides the defaults and ci/all-features-values.yaml, by scenario (each
# merged over values.yaml as a values file). check_binaries.py starts the binaries with them too.
SCENARIO_VALUES: dict[str, dict] = {
    "existing-secrets": {
        "postgresql": {"existingSecret": "pg-credentials", "existingSecretKey": "url"},
        "redis": {"existingSecret": "redis-credentials"},
        "notifySvc": {"webhook": {"url": "http://hooks.example:8080/in", "existingSecret": "webhook-credentials"}}},
    # Static tokens only (no JWT), in development; traces without sampler ratio or headers; SASL
    # without TLS; Redis and PostgreSQL TLS with CAs from the other kind (Secret / ConfigMap).
    "auth-tokens-only": {
        "auth": {"enabled": True, "tokens": {"existingSecret": "static-tokens"},
                 "inventoryToken": {"existingSecret": "static-tokens", "existingSecretKey": "order-api"}},
        "tracing": {"enabled": True, "otlpEndpoint": "https://otlp.example.com:4317", "sampler": "always_on"},
        "kafka": {"properties": {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "orderflow"},
                  "sasl": {"passwordSecret": "kafka-password"}},
        "redis": {"url": "rediss://redis.cache:6380", "tlsCa": {"secret": "redis-tls"}},
        "postgresql": {"url": "postgres://pg.db:5432/orderflow?sslmode=verify-full&sslrootcert=/etc/orderflow/postgresql/ca.pem",
                       "tlsCa": {"configMap": "pg-ca", "key": "ca.pem"}}},
    # Production with HS256 JWTs only (no issuer, audience or static tokens); TLS to Kafka without
    # SASL; tracing, Redis TLS and PostgreSQL TLS off.
    "jwt-only": {
        "auth": {"environment": "production", "enabled": True, "jwt": {"existingSecret": "jwt-secret", "algorithm": "HS256"},
                 "inventoryToken": {"existingSecret": "order-api-token"}},
        "kafka": {"properties": {"security.protocol": "SSL"}, "tlsCa": {"configMap": "kafka-ca"}}},
    # Each feature's values set while it is off: nothing of it may show.
    "features-off": {
        "auth": {"enabled": False, "jwt": {"existingSecret": "jwt", "issuer": "https://issuer"}, "tokens": {"existingSecret": "t"},
                 "inventoryToken": {"existingSecret": "i"}},
        "tracing": {"enabled": False, "otlpEndpoint": "http://otel:4317", "headers": {"existingSecret": "h"}}},
    "metrics-off": {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}},
    "migration-off": {"migration": {"enabled": False}, "tests": {"enabled": False}},
    # A database role per schema, URLs as values (TLS with the CA from a Secret): no default URL.
    "schema-roles": {
        "postgresql": {
            "url": "", "tlsCa": {"secret": "pg-ca"},
            "schemas": {schema: {"url": f"postgres://{schema}_owner:{schema.capitalize()}-Owner-Pw@pg.db:5432/orderflow"
                                        "?sslmode=verify-full&sslrootcert=/etc/orderflow/postgresql/ca.pem"}
                        for schema in SCHEMAS}}},
    # A database role per schema, each URL in an existing Secret of its own (under another key
    # for one); postgresql.url stays the unused example.
    "schema-existing-secrets": {
        "postgresql": {"schemas": {"orders": {"existingSecret": "orders-db"},
                                   "inventory": {"existingSecret": "inventory-db", "existingSecretKey": "url"},
                                   "notify": {"existingSecret": "notify-db"}}}},
    # A sidecar with another label: the default key is dropped with null (Helm merges maps).
    "dashboard-own-label": {"grafanaDashboard": {"enabled": True, "labels": {"grafana_dashboard": None, "dashboards.example.com/load": "yes"}}},
}


def render_values(helm_bin: str, override: dict, release: str = RELEASE) -> tuple[Render, dict]:
    """Renders with `override` as a values file; returns the render and the merged values."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "values.yaml"
        path.write_text(yaml.safe_dump(override))
        return render(helm_bin, "-f", str(path), release=release), chart_values(override)


def name_of(component: str, prefix: str = PREFIX) -> str:
    return f"{prefix}-{component}"


def job_name(schema: str, prefix: str = PREFIX) -> str:
    """The migration Job of `schema` (and its hook Secret), cut at 63 characters like the chart's names."""
    return f"{prefix}-migration-{schema}"[:63].rstrip("-")


def schema_database(values: dict, schema: str, prefix: str = PREFIX) -> tuple[tuple[str, str, str], str | None]:
    """Where the services of `schema` get their database URL under `values`: the Secret entry
    (kind, name, key), and the URL when the chart stores it (None: an existing Secret). The
    schema's existingSecret, else its url (the chart's Secret, database-url-<schema>), else the
    default: postgresql.existingSecret, else postgresql.url (database-url)."""
    pg = values["postgresql"]
    own = pg["schemas"][schema]
    if own["existingSecret"]:
        return ("secret", own["existingSecret"], own["existingSecretKey"]), None
    if own["url"]:
        return ("secret", prefix, f"database-url-{schema}"), own["url"]
    if pg["existingSecret"]:
        return ("secret", pg["existingSecret"], pg["existingSecretKey"]), None
    return ("secret", prefix, "database-url"), pg["url"]


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def hook_set(doc: dict, key: str = "helm.sh/hook") -> set[str]:
    value = (doc["metadata"].get("annotations") or {}).get(key, "")
    return {part.strip() for part in value.split(",") if part.strip()}


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


# --- What the binaries read, taken from the Rust sources (grep, no compiling) -------------------
# Every setting is a clap argument, `#[arg(long, env = "ORDERFLOW_…")]`, in a struct that derives
# clap::Args or clap::Parser; a binary's `Config::parse()` struct flattens the shared groups of
# runtime/src, kafka/src, telemetry/src and grpc/src (`#[command(flatten)]`). Following those flattens gives each binary's
# exact list.
RUNTIME_SRC = ROOT / "runtime" / "src"
TELEMETRY_SRC = ROOT / "telemetry" / "src"
SHARED_SRCS = (RUNTIME_SRC, ROOT / "kafka" / "src", TELEMETRY_SRC, ROOT / "grpc" / "src")
PROTO_DIR = ROOT / "proto"
TOPICS_RS = ROOT / "proto" / "src" / "topics.rs"
CLAP_STRUCT = re.compile(
    r"^#\[derive\(([^)]*)\)\]\s*(?:(?:#\[[^\n]*\]|///[^\n]*)\s*)*pub struct (\w+)\s*\{(.*?)^\}", re.M | re.S)
CLAP_FIELD = re.compile(r"^\s*pub (\w+)\s*:\s*([^,\n]+),\s*$", re.M)
ENV_ATTR = re.compile(r'\benv\s*=\s*"((?:ORDERFLOW|OTEL)_[A-Z0-9_]+)"')
DEFAULT_ATTR = re.compile(r'\bdefault_value(?:_t)?\s*=\s*("([^"]*)"|[^,\n)]+)')


@dataclass
class ClapGroup:
    """One clap struct: its variables (with defaults), its long flags, the groups it flattens."""
    env: dict[str, str | None] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    flatten: list[str] = field(default_factory=list)


@dataclass
class BinarySettings:
    env: dict[str, str | None]  # variable → its default (None: none)
    flags: set[str]
    files: list[str]            # where they are defined (for messages)


def clap_groups(src: Path) -> dict[str, tuple[ClapGroup, str]]:
    """The clap structs of one crate's src/, by name, with the file each is in."""
    groups: dict[str, tuple[ClapGroup, str]] = {}
    for path in sorted(src.rglob("*.rs")):
        for m in CLAP_STRUCT.finditer(path.read_text()):
            if not re.search(r"\b(Args|Parser)\b", m.group(1)):
                continue
            body = re.sub(r"^\s*//[^\n]*$", "", m.group(3), flags=re.M)
            group, start = ClapGroup(), 0
            for f in CLAP_FIELD.finditer(body):
                attrs, start = body[start:f.start()], f.end()
                name, ty = f.group(1), f.group(2).strip()
                if re.search(r"#\[(?:command|clap)\(\s*flatten\s*\)\]", attrs):
                    group.flatten.append(ty.split("::")[-1])
                    continue
                if "#[arg(" not in attrs:
                    continue
                long = re.search(r'\blong\b(?:\s*=\s*"([^"]+)")?', attrs)
                if long:
                    group.flags.add("--" + (long.group(1) or name.replace("_", "-")))
                env = ENV_ATTR.search(attrs)
                if env:
                    default = DEFAULT_ATTR.search(attrs)
                    group.env[env.group(1)] = None if not default else (
                        default.group(2) if default.group(2) is not None else default.group(1).strip().replace("_", ""))
            groups[m.group(2)] = (group, str(path.relative_to(ROOT)))
    return groups


@functools.lru_cache(maxsize=None)
def binary_settings() -> dict[str, BinarySettings]:
    """Per binary (= component): every ORDERFLOW_* variable and long flag it reads."""
    shared = {name: group for src in SHARED_SRCS for name, group in clap_groups(src).items()}
    result = {}
    for component in COMPONENTS:
        groups = {**shared, **clap_groups(ROOT / component / "src")}
        main = (ROOT / component / "src" / "main.rs").read_text()
        root = re.search(r"\b(\w+)::parse\(\)", main)
        if root is None:
            raise SystemExit(f"{component}/src/main.rs: no `<Config>::parse()` found")
        settings, pending, seen = BinarySettings({}, set(), []), [root.group(1)], set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            if name not in groups:
                raise SystemExit(f"{component}: flattened clap struct {name} not found under {component}/src, runtime/src, kafka/src, telemetry/src or grpc/src")
            seen.add(name)
            group, path = groups[name]
            settings.env.update(group.env)
            settings.flags |= group.flags
            settings.files.append(path)
            pending.extend(group.flatten)
        result[component] = settings
    return result


def all_read_variables() -> set[str]:
    return {name for s in binary_settings().values() for name in s.env}


# --- The OpenTelemetry variables ----------------------------------------------------------------
# Besides its clap settings (OTEL_EXPORTER_OTLP_ENDPOINT is one), a binary's telemetry reads a few
# OTEL_* variables itself (telemetry/src/setup.rs), and the OpenTelemetry SDK reads the standard
# ones. The SDK's are listed here, read out of the sources of the versions Cargo.lock pins (grep
# '"OTEL_' in opentelemetry_sdk and opentelemetry-otlp), trace settings only: the services export
# no OTLP metrics or logs, so the *_METRICS_*, *_LOGS_*, OTEL_METRIC_* and OTEL_BLRP_* ones would do
# nothing. check_sources fails when Cargo.lock moves to another version, to have the list re-read.
TELEMETRY_RS = TELEMETRY_SRC / "setup.rs"
OTEL_SDK_CRATES = {"opentelemetry_sdk": "0.33.1", "opentelemetry-otlp": "0.33.1"}
OTEL_SDK_VARIABLES = {
    "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_MAX_CONCURRENT_EXPORTS", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    *(f"OTEL_EXPORTER_OTLP_{signal}{name}" for signal in ("", "TRACES_")
      for name in ("ENDPOINT", "HEADERS", "TIMEOUT", "COMPRESSION", "PROTOCOL", "INSECURE")),
}


def locked_versions() -> dict[str, set[str]]:
    """Cargo.lock: every package's locked versions."""
    versions: dict[str, set[str]] = {}
    for name, version in re.findall(r'^name = "([^"]+)"\nversion = "([^"]+)"', CARGO_LOCK.read_text(), re.M):
        versions.setdefault(name, set()).add(version)
    return versions


@functools.lru_cache(maxsize=None)
def otel_variables() -> frozenset[str]:
    """Every OTEL_* variable a binary with the telemetry settings honours."""
    clap = {name for name in all_read_variables() if name.startswith("OTEL_")}
    runtime = set(re.findall(r'"(OTEL_[A-Z0-9_]+)"', TELEMETRY_RS.read_text()))
    return frozenset(clap | runtime | OTEL_SDK_VARIABLES)


def otel_read_by(binary: str) -> frozenset[str]:
    """The OTEL_* variables `binary` honours: all of them once it has the telemetry settings."""
    return otel_variables() if "OTEL_EXPORTER_OTLP_ENDPOINT" in binary_settings()[binary].env else frozenset()


def proto_services() -> set[str]:
    """Full names (package.Service) of every gRPC service in proto/."""
    names = set()
    for path in PROTO_DIR.rglob("*.proto"):
        text = path.read_text()
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
        for service in re.findall(r"^service\s+(\w+)", text, re.M):
            names.add(f"{package.group(1)}.{service}" if package else service)
    return names


SCHEMA_OPEN = re.compile(r"process::open_pool\(\s*\"[^\"]*\",\s*[^,]+,\s*&(\w+)::SCHEMA\s*,")
SCHEMA_STATIC = re.compile(r'pub static SCHEMA\b[^=]*=\s*[\w:]*Schema\s*\{[^}]*?\bname:\s*"(\w+)"', re.S)


def rust_schemas() -> dict[str, str | None]:
    """Per binary: the PostgreSQL schema it opens (`process::open_pool(…, &<crate>::SCHEMA, …)` in its
    sources; `crate` is its own, `orderflow_<name>` the workspace crate <name> with dashes), read out
    of that crate's `pub static SCHEMA … Schema { name: "…" }`."""
    found: dict[str, str | None] = {}
    for component in COMPONENTS:
        text = "\n".join(path.read_text() for path in sorted((ROOT / component / "src").rglob("*.rs")))
        opened = SCHEMA_OPEN.search(text)
        if opened is None:
            found[component] = None
            continue
        crate = opened.group(1)
        src = ROOT / component / "src" if crate == "crate" else ROOT / crate.removeprefix("orderflow_").replace("_", "-") / "src"
        names = [m.group(1) for path in sorted(src.rglob("*.rs")) for m in SCHEMA_STATIC.finditer(path.read_text())]
        found[component] = names[0] if len(names) == 1 else None
    return found


def rust_topics() -> list[str]:
    """proto/src/topics.rs: the values of the constants listed in `ALL`, in order."""
    text = TOPICS_RS.read_text()
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]+)";', text))
    listed = re.search(r"pub const ALL: &\[&str\] = &\[(.*?)\];", text, re.S)
    return [consts[n] for n in re.findall(r"\w+", listed.group(1))] if listed else []


def check_security(c: Checker, where: str, pod_spec: dict, container: dict) -> None:
    pod_sc = pod_spec.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    c.check(pod_sc.get("runAsNonRoot") is True or sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot is not true")
    uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
    c.check(uid is not None and uid != 0, f"{where}: runAsUser is {uid!r}, want a non-root uid")
    c.check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem is not true")
    c.check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation is not false")
    c.check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{where}: capabilities.drop lacks ALL")
    seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
    c.check(seccomp == "RuntimeDefault", f"{where}: seccompProfile is {seccomp!r}, want RuntimeDefault")


def check_tmp(c: Checker, where: str, pod_spec: dict, container: dict) -> None:
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    vol = volumes.get(mounts.get("/tmp", ""), {})
    c.check("emptyDir" in vol, f"{where}: /tmp is not an emptyDir mount (read-only root filesystem needs it)")


def check_labels(c: Checker, where: str, labels: dict) -> None:
    missing = [k for k in STANDARD_LABELS if not labels.get(k)]
    c.check(not missing, f"{where}: missing labels {missing}")
    c.check(labels.get("app.kubernetes.io/part-of") == "orderflow", f"{where}: part-of is not orderflow")
    c.check(labels.get("app.kubernetes.io/managed-by") == "Helm", f"{where}: managed-by is not Helm")


# --- Credentials and certificates as files -------------------------------------------------------
# The chart mounts every Secret (and CA ConfigMap) as a read-only projected volume, mode 0440: the
# kubelet writes the files as root with the pod's fsGroup, the group of the services' user. Only
# OTEL_EXPORTER_OTLP_HEADERS may be a Secret in the environment: the SDK has no file form of it.
SECRET_FILE_MODE = 0o440
ENV_SECRETS_ALLOWED = {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"}
FILE_VOLUME_KINDS = ("secret", "configMap", "projected")
# Paths inside a value that name a file: librdkafka's, and libpq's (the PostgreSQL URL's query).
KAFKA_FILE_PROPERTIES = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")
PG_FILE_PARAMS = ("sslrootcert", "sslcert", "sslkey")
ENV_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def volume_files(volume: dict) -> list[tuple[str, tuple[str, str, str]]]:
    """The files a secret, configMap or projected volume provides: (path in it, (kind, name, key))."""
    out = []

    def source(kind: str, src: dict) -> None:
        name = src.get("name") or src.get("secretName") or ""
        for item in src.get("items") or [{"key": "*", "path": "*"}]:
            out.append((item["path"], (kind, name, item["key"])))

    for kind in ("secret", "configMap"):
        if kind in volume:
            source(kind, volume[kind])
    for src in (volume.get("projected") or {}).get("sources") or []:
        for kind in ("secret", "configMap"):
            if kind in src:
                source(kind, src[kind])
    return out


def volume_mode(volume: dict) -> int | None:
    return next(((volume[k] or {}).get("defaultMode") for k in FILE_VOLUME_KINDS if k in volume), None)


def mounted_files(pod: dict, ctr: dict) -> dict[str, dict]:
    """Each file a container sees from a Secret or ConfigMap: its path → source (kind, name, key), readOnly."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files = {}
    for m in ctr.get("volumeMounts", []):
        for path, src in volume_files(volumes.get(m["name"], {})):
            files[f"{m['mountPath'].rstrip('/')}/{path}"] = {"source": src, "readOnly": m.get("readOnly") is True}
    return files


def split_pairs(text: str | None, sep: str = ",") -> dict[str, str]:
    """`k=v,k=v` (ORDERFLOW_KAFKA_PROPERTIES, OTEL_RESOURCE_ATTRIBUTES) as a dict."""
    return dict(pair.split("=", 1) for pair in (text or "").split(sep) if "=" in pair)


def secret_text(r: Render, source: tuple[str, str, str] | None) -> str | None:
    """The content of a file from a Secret the render holds (None for an existing Secret)."""
    if not source or source[0] != "secret":
        return None
    secret = r.get("Secret", source[1])
    value = ((secret or {}).get("data") or {}).get(source[2])
    return base64.b64decode(value).decode() if value else None


def check_files(c: Checker, r: Render, where: str, pod: dict, ctr: dict) -> None:
    """Credentials and certificates are read-only files, and whatever names a file finds it mounted."""
    binary = Path((ctr.get("command") or ["?"])[0]).name
    reads = binary_settings().get(binary)
    files = mounted_files(pod, ctr)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in ctr.get("volumeMounts", []):
        vol = volumes.get(m["name"])
        if not c.check(vol is not None, f"{where}: mounts {m['name']}, which is no volume of the pod"):
            continue
        if any(k in vol for k in FILE_VOLUME_KINDS):
            c.check(m.get("readOnly") is True, f"{where}: {m['mountPath']} (volume {m['name']}) is not mounted read-only")
            mode = volume_mode(vol)
            c.check(mode == SECRET_FILE_MODE, f"{where}: volume {m['name']} has mode {format(mode, '04o') if mode is not None else 'default (0644)'}, "
                    "want 0440 (root and the pod's fsGroup only)")
            c.check(m["mountPath"].startswith("/etc/orderflow/"), f"{where}: {m['mountPath']} is not under /etc/orderflow/")
    if files:
        pod_sc, sc = pod.get("securityContext") or {}, ctr.get("securityContext") or {}
        group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        c.check(pod_sc.get("fsGroup") is not None and pod_sc.get("fsGroup") == group,
                f"{where}: 0440 files are readable by the service only with fsGroup {pod_sc.get('fsGroup')} = its runAsGroup {group}")
    defined: set[str] = set()
    for e in ctr.get("env", []):
        name = e["name"]
        for ref in ENV_REFERENCE.findall(e.get("value", "")):
            c.check(ref in defined, f"{where}: {name} refers to $({ref}), which is not defined before it (it would stay literal)")
        defined.add(name)
        if name.endswith("_FILE"):
            path = e.get("value", "")
            c.check(path in files and files[path]["readOnly"], f"{where}: {name}={path!r} is no file of a read-only mounted Secret or ConfigMap")
        sref = (e.get("valueFrom") or {}).get("secretKeyRef")
        c.check(not sref or name in ENV_SECRETS_ALLOWED, f"{where}: {name} is a Secret in the environment: mount it as a file (*_FILE)")
    if reads and "ORDERFLOW_KAFKA_PROPERTIES" in reads.env:
        props = split_pairs(effective_env(r, ctr, "ORDERFLOW_KAFKA_PROPERTIES", ""))
        for key in KAFKA_FILE_PROPERTIES:
            if props.get(key, "probe") != "probe":
                c.check(props[key] in files, f"{where}: Kafka's {key}={props[key]} is no mounted file")
    url_file = env_map(ctr).get("ORDERFLOW_DATABASE_URL_FILE", {}).get("value", "")
    url = secret_text(r, (files.get(url_file) or {}).get("source"))
    if url:
        query = dict(pair.split("=", 1) for pair in url.partition("?")[2].split("&") if "=" in pair)
        for param in PG_FILE_PARAMS:
            if param in query:
                c.check(query[param] in files, f"{where}: the PostgreSQL URL's {param}={query[param]} is no mounted file")


# The variables the optional features add; check_wiring wants exactly those the values call for.
FEATURE_VARIABLES = {
    "ORDERFLOW_AUTH_JWT_KEY_FILE", "ORDERFLOW_AUTH_JWT_ALGORITHM", "ORDERFLOW_AUTH_JWT_ISSUER", "ORDERFLOW_AUTH_JWT_AUDIENCE",
    "ORDERFLOW_AUTH_TOKENS_FILE", "ORDERFLOW_INVENTORY_TOKEN_FILE", "ORDERFLOW_REDIS_TLS_CA_FILE", "ORDERFLOW_KAFKA_PROPERTIES",
    "ORDERFLOW_KAFKA_SASL_PASSWORD_FILE", "ORDERFLOW_NOTIFY_WEBHOOK_SECRET_FILE",
}
# Downward-API helpers of OTEL_RESOURCE_ATTRIBUTES.
TRACING_HELPERS = {"K8S_NAMESPACE_NAME": "metadata.namespace", "K8S_POD_NAME": "metadata.name", "K8S_NODE_NAME": "spec.nodeName"}


def env_string(value) -> str:
    """A value as Helm's orderflow.envString renders it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def ca_source(ca: dict) -> tuple[str, str, str] | None:
    if ca.get("secret"):
        return ("secret", ca["secret"], ca["key"])
    if ca.get("configMap"):
        return ("configMap", ca["configMap"], ca["key"])
    return None


def expected_features(values: dict, component: str, prefix: str) -> dict[str, object]:
    """The feature variables `component` must see under `values`: name → its value (a str; a dict
    for key=value lists; ("secret"|"configMap", name, key) for a file; ("secretKeyRef"|"fieldRef", …))."""
    reads = binary_settings()[component].env
    want: dict[str, object] = {}
    auth = values["auth"]
    if auth["enabled"]:
        jwt = auth["jwt"]
        if jwt["existingSecret"]:
            want["ORDERFLOW_AUTH_JWT_KEY_FILE"] = ("secret", jwt["existingSecret"], jwt["existingSecretKey"])
            want["ORDERFLOW_AUTH_JWT_ALGORITHM"] = jwt["algorithm"]
            for key in ("issuer", "audience"):
                if jwt[key]:
                    want[f"ORDERFLOW_AUTH_JWT_{key.upper()}"] = jwt[key]
        if auth["tokens"]["existingSecret"]:
            want["ORDERFLOW_AUTH_TOKENS_FILE"] = ("secret", auth["tokens"]["existingSecret"], auth["tokens"]["existingSecretKey"])
        if "ORDERFLOW_INVENTORY_TOKEN_FILE" in reads:
            token = auth["inventoryToken"]
            want["ORDERFLOW_INVENTORY_TOKEN_FILE"] = ("secret", token["existingSecret"], token["existingSecretKey"])
    if "ORDERFLOW_REDIS_URL" in reads and ca_source(values["redis"]["tlsCa"]):
        want["ORDERFLOW_REDIS_TLS_CA_FILE"] = ca_source(values["redis"]["tlsCa"])
    kafka = values["kafka"]
    if "ORDERFLOW_KAFKA_BROKERS" in reads:
        props = {key: env_string(value) for key, value in kafka["properties"].items()}
        if ca_source(kafka["tlsCa"]):
            props["ssl.ca.location"] = ca_source(kafka["tlsCa"])
        if props:
            want["ORDERFLOW_KAFKA_PROPERTIES"] = props
        if kafka["sasl"]["passwordSecret"]:
            want["ORDERFLOW_KAFKA_SASL_PASSWORD_FILE"] = ("secret", kafka["sasl"]["passwordSecret"], kafka["sasl"]["passwordSecretKey"])
    webhook = values["notifySvc"]["webhook"]
    if "ORDERFLOW_NOTIFY_WEBHOOK_SECRET_FILE" in reads and webhook["url"]:
        want["ORDERFLOW_NOTIFY_WEBHOOK_SECRET_FILE"] = (
            ("secret", webhook["existingSecret"], webhook["existingSecretKey"]) if webhook["existingSecret"] else ("secret", prefix, "webhook-secret"))
    tracing = values["tracing"]
    if tracing["enabled"]:
        want["OTEL_EXPORTER_OTLP_ENDPOINT"] = tracing["otlpEndpoint"]
        want["OTEL_SERVICE_NAME"] = component
        want["OTEL_TRACES_SAMPLER"] = tracing["sampler"]
        if tracing["sampler"].endswith("traceidratio"):
            want["OTEL_TRACES_SAMPLER_ARG"] = env_string(tracing["samplerArg"])
        want["OTEL_RESOURCE_ATTRIBUTES"] = {
            "k8s.namespace.name": "$(K8S_NAMESPACE_NAME)", "k8s.pod.name": "$(K8S_POD_NAME)", "k8s.node.name": "$(K8S_NODE_NAME)",
            "k8s.deployment.name": name_of(component, prefix),
            **{key: env_string(value) for key, value in tracing["resourceAttributes"].items()}}
        if tracing["headers"]["existingSecret"]:
            want["OTEL_EXPORTER_OTLP_HEADERS"] = ("secretKeyRef", tracing["headers"]["existingSecret"], tracing["headers"]["existingSecretKey"])
        for helper, field_path in TRACING_HELPERS.items():
            want[helper] = ("fieldRef", field_path)
    return want


def check_wiring(c: Checker, r: Render, values: dict, where: str, component: str, pod: dict, ctr: dict, prefix: str) -> None:
    """The optional features' variables (env and ConfigMap) are exactly those `values` call for, with their values and files."""
    reads = binary_settings()[component].env
    env = env_map(ctr)
    seen: dict[str, dict] = {}
    for source in ctr.get("envFrom", []):
        cm = r.get("ConfigMap", (source.get("configMapRef") or {}).get("name", "")) or {}
        for key, value in (cm.get("data") or {}).items():
            if key in FEATURE_VARIABLES and key in reads:
                seen[key] = {"name": key, "value": value}
    for name, e in env.items():
        if name in FEATURE_VARIABLES or name.startswith("OTEL_") or name in TRACING_HELPERS:
            seen[name] = e
    want = expected_features(values, component, prefix)
    c.check(set(seen) == set(want), f"{where}: feature variables {sorted(seen)}, want exactly {sorted(want)}")
    files = mounted_files(pod, ctr)
    for name, expected in want.items():
        e = seen.get(name)
        if e is None:
            continue
        value_from = e.get("valueFrom") or {}
        if isinstance(expected, tuple) and expected[0] == "secretKeyRef":
            ref = value_from.get("secretKeyRef") or {}
            c.check((ref.get("name"), ref.get("key")) == expected[1:], f"{where}: {name} from {ref}, want Secret {expected[1:]}")
        elif isinstance(expected, tuple) and expected[0] == "fieldRef":
            c.check((value_from.get("fieldRef") or {}).get("fieldPath") == expected[1], f"{where}: {name} is not the downward API's {expected[1]}")
        elif isinstance(expected, tuple):
            path = e.get("value", "")
            got = (files.get(path) or {}).get("source")
            c.check(got == expected, f"{where}: {name}={path} is {got}, want the file of {expected}")
        elif isinstance(expected, dict):
            got = split_pairs(e.get("value"))
            for key, value in expected.items():
                if isinstance(value, tuple):   # a path that must be the mounted file of this source
                    c.check((files.get(got.get(key, "")) or {}).get("source") == value, f"{where}: {name} {key}={got.get(key)} is not the file of {value}")
                    got.pop(key, None)
            c.check(got == {k: v for k, v in expected.items() if not isinstance(v, tuple)}, f"{where}: {name} is {e.get('value')!r}, want {expected}")
        else:
            c.check(e.get("value") == expected, f"{where}: {name} is {e.get('value')!r}, want {expected!r}")
    environment = effective_env(r, ctr, "ORDERFLOW_ENVIRONMENT", None)
    c.check(environment == values["auth"]["environment"], f"{where}: ORDERFLOW_ENVIRONMENT is {environment!r}, want {values['auth']['environment']!r}")
    # Authentication leaves health and reflection open: the probes stay plain gRPC health checks.
    if values["auth"]["enabled"]:
        c.check(all("grpc" in (ctr.get(p) or {}) for p in ("startupProbe", "livenessProbe", "readinessProbe")),
                f"{where}: with authentication on, the probes must stay grpc health checks (health needs no token)")


def check_common(c: Checker, r: Render, *, prefix: str = PREFIX, metrics: bool = True, values: dict | None = None,
                 redis_secret: tuple[str, str] | None = None) -> None:
    """The facts every render must show, whatever the values (`values`: those it was rendered with)."""
    values = values or chart_values()
    redis_secret = redis_secret or (prefix, "redis-url")

    for doc in r.docs:
        meta = doc["metadata"]
        where = f"{doc['kind']}/{meta['name']}"
        c.check(len(meta["name"]) <= 63, f"{where}: name longer than 63 characters")
        check_labels(c, where, meta.get("labels") or {})
        if doc["kind"] != "Secret":
            for secret in ALL_FEATURES_SECRETS + SCHEMA_ROLE_SECRETS + ["orderflow:orderflow@"]:
                c.check(secret not in yaml.safe_dump(doc), f"{where}: contains the credential {secret!r} (only Secrets may)")

    # ConfigMap: settings, no credentials.
    cm_name = f"{prefix}-config"
    cm = r.get("ConfigMap", cm_name)
    if c.check(cm is not None, f"ConfigMap {cm_name} missing"):
        data = cm.get("data") or {}
        for forbidden in ("ORDERFLOW_DATABASE_URL", "ORDERFLOW_REDIS_URL", "ORDERFLOW_NOTIFY_WEBHOOK_SECRET"):
            c.check(forbidden not in data, f"ConfigMap: holds {forbidden} (credentials belong in a Secret)")
        for key, value in data.items():
            c.check(not URL_WITH_PASSWORD.search(str(value)), f"ConfigMap: {key} holds a URL with a password")
            c.check(isinstance(value, str), f"ConfigMap: {key} is not a string")
        c.check(data.get("ORDERFLOW_INVENTORY_URL", "").startswith("http://"), "ConfigMap: ORDERFLOW_INVENTORY_URL is not http://")
        for key in ("ORDERFLOW_KAFKA_BROKERS", "ORDERFLOW_KAFKA_TOPIC_PREFIX", "ORDERFLOW_KAFKA_TOPIC_PARTITIONS",
                    "ORDERFLOW_KAFKA_TOPIC_REPLICATION", "ORDERFLOW_WORKER_GROUP_ID", "ORDERFLOW_NOTIFY_GROUP_ID",
                    "ORDERFLOW_LOG_FORMAT", "ORDERFLOW_LOG"):
            c.check(key in data, f"ConfigMap: {key} missing")
        c.check(data.get("ORDERFLOW_LOG_FORMAT") in ("json", "pretty"), "ConfigMap: ORDERFLOW_LOG_FORMAT not json|pretty")
        for key, value in data.items():
            c.check(not re.fullmatch(r"[0-9.]+e\+[0-9]+", value), f"ConfigMap: {key}={value} is in float notation")

    secrets = {s["metadata"]["name"]: s for s in r.kind("Secret")}
    sa_names = r.names("ServiceAccount")
    deployments = {d["metadata"]["name"]: d for d in r.kind("Deployment")}
    c.check(set(deployments) == {name_of(x, prefix) for x in COMPONENTS},
            f"Deployments are {sorted(deployments)}, want one per service")

    for component, (values_key, port, listen_env, grpc_service, has_service) in COMPONENTS.items():
        dep = deployments.get(name_of(component, prefix))
        if dep is None:
            continue
        where = f"Deployment/{name_of(component, prefix)}"
        spec = dep["spec"]
        pod_meta = spec["template"]["metadata"]
        pod = spec["template"]["spec"]
        labels = pod_meta.get("labels") or {}
        check_labels(c, f"{where} pod template", labels)
        c.check(labels.get("app.kubernetes.io/component") == component, f"{where}: pod component label")
        c.check(selects(spec["selector"]["matchLabels"], labels), f"{where}: selector does not select its pods")
        strategy = spec.get("strategy") or {}
        c.check(strategy.get("type") == "RollingUpdate" and strategy.get("rollingUpdate", {}).get("maxUnavailable") == 0,
                f"{where}: rolling update must have maxUnavailable 0")
        c.check(pod.get("terminationGracePeriodSeconds", 30) >= 30, f"{where}: terminationGracePeriodSeconds < 30")
        annotations = pod_meta.get("annotations") or {}
        for key in ("checksum/config", "checksum/secret"):
            c.check(re.fullmatch(r"[0-9a-f]{64}", str(annotations.get(key, ""))) is not None, f"{where}: pod annotation {key} missing")
        sa = pod.get("serviceAccountName")
        c.check(sa in sa_names or sa == "default", f"{where}: serviceAccountName {sa!r} is not rendered")
        c.check(pod.get("automountServiceAccountToken") is False, f"{where}: a service account token is mounted")

        containers = pod["containers"]
        if not c.check(len(containers) == 1, f"{where}: want one container, got {len(containers)}"):
            continue
        ctr = containers[0]
        cwhere = f"{where} container {ctr['name']}"
        c.check(ctr.get("command") == [f"/usr/local/bin/{component}"], f"{cwhere}: command is {ctr.get('command')}, want its binary")
        ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
        c.check(ports.get("grpc") == port, f"{cwhere}: grpc port {ports.get('grpc')}, want {port}")
        if metrics:
            c.check(ports.get("metrics") == 9090, f"{cwhere}: metrics port {ports.get('metrics')}, want 9090")
        else:
            c.check("metrics" not in ports, f"{cwhere}: metrics port present with metrics.enabled=false")

        # Probes: native gRPC, liveness on the server (""), readiness on the service's name.
        live = (ctr.get("livenessProbe") or {}).get("grpc")
        ready = (ctr.get("readinessProbe") or {}).get("grpc")
        start = (ctr.get("startupProbe") or {}).get("grpc")
        if c.check(live is not None, f"{cwhere}: liveness probe is not grpc"):
            c.check(live.get("port") == port, f"{cwhere}: liveness probe port {live.get('port')}, want {port}")
            c.check(live.get("service", "") == "", f"{cwhere}: liveness probe should check the server (service \"\")")
        if c.check(ready is not None, f"{cwhere}: readiness probe is not grpc"):
            c.check(ready.get("port") == port, f"{cwhere}: readiness probe port {ready.get('port')}, want {port}")
            c.check(ready.get("service") == grpc_service, f"{cwhere}: readiness service {ready.get('service')!r}, want {grpc_service}")
        if c.check(start is not None, f"{cwhere}: startup probe is not grpc"):
            c.check(start.get("port") == port, f"{cwhere}: startup probe port")

        resources = ctr.get("resources") or {}
        for path in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
            c.check(bool((resources.get(path[0]) or {}).get(path[1])), f"{cwhere}: resources.{'.'.join(path)} not set")
        check_security(c, cwhere, pod, ctr)
        check_tmp(c, cwhere, pod, ctr)

        # Env wiring.
        names = [e["name"] for e in ctr.get("env", [])]
        c.check(len(names) == len(set(names)), f"{cwhere}: duplicate env names {sorted(n for n in names if names.count(n) > 1)}")
        env = env_map(ctr)
        c.check(env.get(listen_env, {}).get("value") == f"0.0.0.0:{port}", f"{cwhere}: {listen_env} is not 0.0.0.0:{port}")
        # The connection URLs are files of the Secret (ORDERFLOW_*_URL_FILE), never env values.
        files = mounted_files(pod, ctr)

        def file_source(name: str) -> tuple | None:
            return (files.get(env.get(name, {}).get("value", "")) or {}).get("source")

        c.check("ORDERFLOW_DATABASE_URL" not in env, f"{cwhere}: ORDERFLOW_DATABASE_URL is an env value; the URL must be the file ORDERFLOW_DATABASE_URL_FILE")
        # The URL of the service's own schema (its role), from the Secret the values name.
        db_source, db_url = schema_database(values, COMPONENT_SCHEMA[component], prefix)
        c.check(file_source("ORDERFLOW_DATABASE_URL_FILE") == db_source,
                f"{cwhere}: ORDERFLOW_DATABASE_URL_FILE is {file_source('ORDERFLOW_DATABASE_URL_FILE')}, "
                f"want the file of {db_source} (the {COMPONENT_SCHEMA[component]} schema's URL)")
        if db_url is not None:
            c.check(secret_text(r, file_source("ORDERFLOW_DATABASE_URL_FILE")) == db_url,
                    f"{cwhere}: its database URL file does not hold the {COMPONENT_SCHEMA[component]} schema's URL")
        if "ORDERFLOW_REDIS_URL" in binary_settings()[component].env:
            c.check("ORDERFLOW_REDIS_URL" not in env, f"{cwhere}: ORDERFLOW_REDIS_URL is an env value; the URL must be the file ORDERFLOW_REDIS_URL_FILE")
            c.check(file_source("ORDERFLOW_REDIS_URL_FILE") == ("secret", *redis_secret),
                    f"{cwhere}: ORDERFLOW_REDIS_URL_FILE is {file_source('ORDERFLOW_REDIS_URL_FILE')}, want the file of Secret {redis_secret}")
        else:
            c.check(not {"ORDERFLOW_REDIS_URL", "ORDERFLOW_REDIS_URL_FILE"} & set(env), f"{cwhere}: gets the Redis URL it does not use")
            c.check(not any(p.startswith("/etc/orderflow/redis/") for p in files), f"{cwhere}: mounts Redis files it does not use")
        if "ORDERFLOW_KAFKA_BROKERS" not in binary_settings()[component].env:
            c.check(not any(p.startswith("/etc/orderflow/kafka/") for p in files), f"{cwhere}: mounts Kafka files it does not use")
        check_files(c, r, cwhere, pod, ctr)
        check_wiring(c, r, values, cwhere, component, pod, ctr, prefix)
        # The drain must end before SIGKILL: preStop sleep + drain timeout < grace period.
        grace = pod.get("terminationGracePeriodSeconds", 30)
        pre_stop = (((ctr.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        drain_ms = env.get("ORDERFLOW_DRAIN_TIMEOUT_MS", {}).get("value", "")
        if c.check(drain_ms.isdigit(), f"{cwhere}: ORDERFLOW_DRAIN_TIMEOUT_MS not set"):
            c.check(pre_stop + int(drain_ms) / 1000 < grace and int(drain_ms) >= 10_000,
                    f"{cwhere}: preStop {pre_stop} s + drain {drain_ms} ms must stay below the grace period {grace} s (and drain >= 10 s)")
        if metrics:
            c.check(env.get("ORDERFLOW_METRICS_LISTEN", {}).get("value") == "0.0.0.0:9090", f"{cwhere}: ORDERFLOW_METRICS_LISTEN is not 0.0.0.0:9090")
        for name, e in env.items():
            c.check(not URL_WITH_PASSWORD.search(str(e.get("value", ""))), f"{cwhere}: env {name} holds a URL with a password in plain text")
        for name, e in env.items():
            sref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if sref and sref["name"] == prefix:
                c.check(sref["key"] in (secrets.get(prefix, {}).get("data") or {}),
                        f"{cwhere}: env {name} refers to key {sref['key']} missing from Secret {prefix}")
        for path, f in files.items():
            kind, name, key = f["source"]
            if kind == "secret" and name == prefix:
                c.check(key in (secrets.get(prefix, {}).get("data") or {}), f"{cwhere}: file {path} is key {key}, missing from Secret {prefix}")
        from_cm = [e.get("configMapRef", {}).get("name") for e in ctr.get("envFrom", [])]
        c.check(from_cm == [f"{prefix}-config"], f"{cwhere}: envFrom {from_cm}, want the chart's ConfigMap")

    check_env_is_read(c, r)
    check_cross_settings(c, r, prefix)
    check_custom_resources(c, r)

    # Services: one per called service, none for consumer-worker.
    services = {s["metadata"]["name"]: s for s in r.kind("Service")}
    c.check(set(services) == {name_of(x, prefix) for x in API_SERVICES},
            f"Services are {sorted(services)}, want exactly order-api, inventory-svc, notify-svc")
    c.check(name_of("consumer-worker", prefix) not in services, "consumer-worker must have no Service")
    for component in API_SERVICES:
        svc = services.get(name_of(component, prefix))
        dep = deployments.get(name_of(component, prefix))
        if svc is None or dep is None:
            continue
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        c.check(selects(svc["spec"]["selector"], pod_labels), f"Service/{name_of(component, prefix)}: selector misses its pods")
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        c.check(ports.get("grpc", {}).get("targetPort") == "grpc", f"Service/{name_of(component, prefix)}: grpc port must target the named port")

    if cm is not None:
        inv = services.get(name_of("inventory-svc", prefix))
        if inv is not None:
            inv_port = {p["name"]: p["port"] for p in inv["spec"]["ports"]}["grpc"]
            want = f"http://{name_of('inventory-svc', prefix)}:{inv_port}"
            c.check(cm["data"].get("ORDERFLOW_INVENTORY_URL") == want,
                    f"ConfigMap: ORDERFLOW_INVENTORY_URL is {cm['data'].get('ORDERFLOW_INVENTORY_URL')!r}, want {want}")

    # Every Secret a container names is rendered (unless it is an existing one). The chart's Secret
    # stores exactly the database URLs some service reads: no unused one (a password for nothing).
    databases = {schema: schema_database(values, schema, prefix) for schema in SCHEMAS}
    if prefix == redis_secret[0] or any(source[1] == prefix for source, _ in databases.values()):
        c.check(prefix in secrets, f"Secret {prefix} missing")
    stored = {k for k in (secrets.get(prefix, {}).get("data") or {}) if k.startswith("database-url")}
    want_stored = {source[2] for source, url in databases.values() if url is not None}
    c.check(stored == want_stored, f"Secret {prefix}: database URL keys {sorted(stored)}, want {sorted(want_stored)}")
    check_schema_urls(c, r, values, prefix)

    # The helm test pod.
    tests = [p for p in r.kind("Pod") if "test" in hook_set(p)]
    if c.check(len(tests) == 1, f"want one helm test pod (helm.sh/hook: test), got {len(tests)}"):
        pod = tests[0]
        args = {a for ctr in pod["spec"]["containers"] for a in ctr.get("args", [])}
        for component in API_SERVICES:
            svc = services.get(name_of(component, prefix))
            if svc is None:
                continue
            port = {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"]
            c.check(f"-addr={name_of(component, prefix)}:{port}" in args, f"helm test pod does not probe {component} at its Service")
            c.check(f"-service={COMPONENTS[component][3]}" in args, f"helm test pod does not check {COMPONENTS[component][3]}")
        for ctr in pod["spec"]["containers"]:
            check_security(c, f"test pod container {ctr['name']}", pod["spec"], ctr)
        c.check(pod["spec"].get("restartPolicy") == "Never", "helm test pod: restartPolicy must be Never")


def database_urls(r: Render) -> dict[str, object]:
    """What each Deployment and Job container reads as its database URL (ORDERFLOW_DATABASE_URL_FILE),
    by "Kind/name": the URL itself when the render holds its Secret, else the (kind, name, key) of
    the existing Secret's entry, else None (no such file)."""
    urls: dict[str, object] = {}
    for doc in r.kind("Deployment") + r.kind("Job"):
        pod = doc["spec"]["template"]["spec"]
        ctr = pod["containers"][0]
        path = env_map(ctr).get("ORDERFLOW_DATABASE_URL_FILE", {}).get("value", "")
        source = (mounted_files(pod, ctr).get(path) or {}).get("source")
        urls[f"{doc['kind']}/{doc['metadata']['name']}"] = secret_text(r, source) if r.get("Secret", (source or ("", ""))[1]) else source
    return urls


def check_schema_urls(c: Checker, r: Render, values: dict, prefix: str = PREFIX) -> None:
    """Each schema's URL reaches its own services and its migration Job: when the three schemas'
    URLs differ (a role per schema), exactly those and no other workload."""
    got = database_urls(r)
    migration = bool(r.kind("Job"))
    wanted = {}
    for schema, (_, components) in SCHEMAS.items():
        source, url = schema_database(values, schema, prefix)
        users = {f"Deployment/{name_of(x, prefix)}" for x in components} | ({f"Job/{job_name(schema, prefix)}"} if migration else set())
        wanted[schema] = (url if url is not None else source, users)
    distinct = len({repr(identity) for identity, _ in wanted.values()}) == len(wanted)
    for schema, (identity, users) in wanted.items():
        reached = {w for w, v in got.items() if v == identity}
        shown = "URL" if isinstance(identity, str) else f"URL (existing Secret {identity[1]}, key {identity[2]})"
        if distinct:
            c.check(reached == users, f"the {schema} schema's {shown} reaches {sorted(reached)}, want exactly {sorted(users)}")
        else:
            c.check(users <= reached, f"the {schema} schema's {shown} reaches {sorted(reached)}, want {sorted(users)} among them")


def check_migration(c: Checker, r: Render, *, prefix: str = PREFIX, values: dict | None = None) -> None:
    """One hook Job per schema, running its binary with --migrate-only and the schema's URL (from an
    existing Secret or from a hook Secret of its own, created first), with the migration.* settings."""
    values = values or chart_values()
    m = values["migration"]
    jobs = {j["metadata"]["name"]: j for j in r.kind("Job")}
    c.check(set(jobs) == {job_name(s, prefix) for s in SCHEMAS}, f"migration Jobs are {sorted(jobs)}, want one per schema {sorted(SCHEMAS)}")
    hook_secrets = {s["metadata"]["name"] for s in r.kind("Secret") if hook_set(s)}
    want_hook_secrets = {job_name(s, prefix) for s in SCHEMAS if schema_database(values, s, prefix)[1] is not None}
    c.check(hook_secrets == want_hook_secrets, f"hook Secrets are {sorted(hook_secrets)}, want {sorted(want_hook_secrets)} "
            "(one per Job whose URL the chart stores)")
    for schema, (binary, _) in SCHEMAS.items():
        job = jobs.get(job_name(schema, prefix))
        if job is None:
            continue
        where = f"Job/{job['metadata']['name']}"
        c.check(hook_set(job) == {"pre-install", "pre-upgrade"}, f"{where}: helm.sh/hook is {hook_set(job)}, want pre-install,pre-upgrade")
        c.check({"before-hook-creation", "hook-succeeded"} <= hook_set(job, "helm.sh/hook-delete-policy"),
                f"{where}: hook-delete-policy must include before-hook-creation,hook-succeeded")
        pod = job["spec"]["template"]["spec"]
        if not c.check(len(pod["containers"]) == 1, f"{where}: want one container, got {len(pod['containers'])}"):
            continue
        ctr = pod["containers"][0]
        argv = (ctr.get("command") or []) + (ctr.get("args") or [])
        c.check(argv == [f"/usr/local/bin/{binary}", "--migrate-only"], f"{where}: runs {argv}, want {binary} --migrate-only (the {schema} schema's owner)")
        c.check(pod.get("restartPolicy") == "Never", f"{where}: restartPolicy must be Never")
        check_security(c, where, pod, ctr)
        check_tmp(c, where, pod, ctr)
        # At hook time the release's own Secret, ConfigMap and ServiceAccount do not exist yet.
        c.check(not ctr.get("envFrom"), f"{where}: envFrom would need the ConfigMap, which does not exist before install")
        c.check(pod.get("serviceAccountName") != prefix, f"{where}: uses the chart's ServiceAccount, which does not exist before install")
        # The same migration.* settings for the three Jobs.
        c.check(job["spec"].get("backoffLimit") == m["backoffLimit"] and job["spec"].get("activeDeadlineSeconds") == m["activeDeadlineSeconds"],
                f"{where}: backoffLimit/activeDeadlineSeconds differ from migration.*")
        c.check(pod.get("serviceAccountName") == (m["serviceAccountName"] or None), f"{where}: serviceAccountName is {pod.get('serviceAccountName')!r}, want migration.serviceAccountName")
        c.check(ctr.get("resources") == m["resources"], f"{where}: resources differ from migration.resources")
        for key in ("nodeSelector", "tolerations", "affinity"):
            c.check(pod.get(key) == (m[key] or None), f"{where}: {key} is {pod.get(key)!r}, want migration.{key}")
        annotations = job["spec"]["template"]["metadata"].get("annotations") or {}
        c.check(annotations == (m["podAnnotations"] or {}), f"{where}: pod annotations {annotations}, want migration.podAnnotations")
        # The URL is a file of the Secret, as in the services; so is PostgreSQL's CA when there is one.
        check_files(c, r, where, pod, ctr)
        files = mounted_files(pod, ctr)
        env = env_map(ctr)
        for extra in m["extraEnv"]:
            c.check(env.get(extra["name"]) == extra, f"{where}: migration.extraEnv {extra['name']} not applied")
        c.check("ORDERFLOW_DATABASE_URL" not in env, f"{where}: ORDERFLOW_DATABASE_URL is an env value; the URL must be a file")
        kind, name, key = (files.get(env.get("ORDERFLOW_DATABASE_URL_FILE", {}).get("value", "")) or {}).get("source") or ("", "", "")
        c.check(kind == "secret", f"{where}: ORDERFLOW_DATABASE_URL_FILE is no file of a mounted Secret")
        pg_ca = ca_source(values["postgresql"]["tlsCa"])
        c.check((files.get("/etc/orderflow/postgresql/ca.pem") or {}).get("source") == pg_ca,
                f"{where}: /etc/orderflow/postgresql/ca.pem is {(files.get('/etc/orderflow/postgresql/ca.pem') or {}).get('source')}, want {pg_ca}")
        # Nothing else: the Job runs no server (no auth, no traces) and talks to PostgreSQL only.
        c.check(not {n for n in env if n in FEATURE_VARIABLES or n.startswith("OTEL_")}, f"{where}: gets feature variables {sorted(env)}")
        c.check(set(files) <= {"/etc/orderflow/postgresql/url", "/etc/orderflow/postgresql/ca.pem"}, f"{where}: mounts {sorted(files)}, want PostgreSQL's files only")
        job_weight = int((job["metadata"].get("annotations") or {}).get("helm.sh/hook-weight", "0"))
        source, url = schema_database(values, schema, prefix)
        if url is None:
            c.check((kind, name, key) == source, f"{where}: database URL from {(kind, name, key)}, want the existing Secret's {source}")
        else:
            # The URL the chart stores, in a hook Secret of the Job's own (the release's Secret does not exist yet).
            c.check(name == job_name(schema, prefix), f"{where}: database URL from Secret {name!r}, want its own hook Secret {job_name(schema, prefix)!r}")
            hook_secret = r.get("Secret", name)
            if c.check(hook_secret is not None, f"{where}: its database URL Secret {name!r} is not rendered"):
                c.check({"pre-install", "pre-upgrade"} <= hook_set(hook_secret),
                        f"Secret/{name}: must be a pre-install,pre-upgrade hook (the Job runs before ordinary resources)")
                weight = int((hook_secret["metadata"].get("annotations") or {}).get("helm.sh/hook-weight", "0"))
                c.check(weight < job_weight, f"Secret/{name}: hook-weight {weight} must be below the Job's {job_weight}")
                c.check({"before-hook-creation", "hook-succeeded"} <= hook_set(hook_secret, "helm.sh/hook-delete-policy"),
                        f"Secret/{name}: hook-delete-policy must include before-hook-creation,hook-succeeded (the URL must not linger)")
                c.check(key in (hook_secret.get("data") or {}), f"Secret/{name}: key {key} missing")
                c.check(secret_text(r, (kind, name, key)) == url, f"Secret/{name}: {key} is not the {schema} schema's URL")


def check_defaults(c: Checker, r: Render) -> None:
    c.scenario = "defaults"
    check_common(c, r)
    check_migration(c, r)
    for kind in ("HorizontalPodAutoscaler", "ScaledObject", "NetworkPolicy", "ServiceMonitor", "PodMonitor"):
        c.check(not r.kind(kind), f"{kind} rendered although it is off by default")
    check_dashboard_configmap(c, r, chart_values())
    pdbs = {p["metadata"]["name"]: p for p in r.kind("PodDisruptionBudget")}
    c.check(set(pdbs) == {name_of(x) for x in COMPONENTS}, f"PodDisruptionBudgets are {sorted(pdbs)}, want one per service")
    for name, pdb in pdbs.items():
        dep = r.get("Deployment", name)
        if dep:
            c.check(pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], f"PDB/{name}: selector differs from its Deployment's")
        c.check(pdb["apiVersion"] == "policy/v1", f"PDB/{name}: apiVersion {pdb['apiVersion']}")
    for dep in r.kind("Deployment"):
        c.check(dep["spec"].get("replicas") == 2, f"Deployment/{dep['metadata']['name']}: replicas {dep['spec'].get('replicas')}, want 2")
        c.check(dep["spec"]["template"]["spec"]["containers"][0]["image"] == "orderflow:0.1.0",
                f"Deployment/{dep['metadata']['name']}: image is not orderflow:<appVersion>")
    cm = r.get("ConfigMap", f"{PREFIX}-config")
    if cm:
        c.check(cm["data"].get("ORDERFLOW_LOG_FORMAT") == "json", "ConfigMap: the default log format must be json")
    secret = r.get("Secret", PREFIX)
    if secret:
        url = base64.b64decode(secret["data"]["database-url"]).decode()
        c.check(url.startswith("postgres://"), "Secret: database-url is not the PostgreSQL URL")


def check_all_features(c: Checker, r: Render) -> None:
    c.scenario = "all-features"
    values = chart_values(yaml.safe_load(ALL_FEATURES.read_text()))
    check_common(c, r, values=values)
    check_migration(c, r, values=values)
    for key, wanted in (("auth.enabled", values["auth"]["enabled"]), ("auth.environment", values["auth"]["environment"] == "production"),
                        ("auth.jwt.existingSecret", bool(values["auth"]["jwt"]["existingSecret"])),
                        ("auth.tokens.existingSecret", bool(values["auth"]["tokens"]["existingSecret"])),
                        ("tracing.enabled", values["tracing"]["enabled"]), ("tracing.headers", bool(values["tracing"]["headers"]["existingSecret"])),
                        ("kafka.sasl.passwordSecret", bool(values["kafka"]["sasl"]["passwordSecret"])),
                        ("kafka.tlsCa", bool(ca_source(values["kafka"]["tlsCa"]))), ("redis.tlsCa", bool(ca_source(values["redis"]["tlsCa"]))),
                        ("postgresql.tlsCa", bool(ca_source(values["postgresql"]["tlsCa"]))),
                        # The three ways to a schema's URL at once: its own url, its own Secret, the default.
                        ("postgresql.schemas.orders.url", bool(values["postgresql"]["schemas"]["orders"]["url"])),
                        ("postgresql.schemas.inventory.existingSecret", bool(values["postgresql"]["schemas"]["inventory"]["existingSecret"])),
                        ("postgresql.schemas.notify on the default", not any(values["postgresql"]["schemas"]["notify"].get(k) for k in ("url", "existingSecret"))),
                        ("grafanaDashboard.enabled", values["grafanaDashboard"]["enabled"]),
                        ("grafanaDashboard.annotations", bool(values["grafanaDashboard"]["annotations"])),
                        ("grafanaDashboard.namespace", bool(values["grafanaDashboard"]["namespace"]))):
        c.check(wanted is True, f"ci/all-features-values.yaml must switch on {key} (production)")
    check_dashboard_configmap(c, r, values)
    cm = r.get("ConfigMap", f"{PREFIX}-config")

    # The credentials are in the Secret (base64), and nowhere else.
    secret = r.get("Secret", PREFIX)
    if c.check(secret is not None, f"Secret {PREFIX} missing"):
        decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        c.check(decoded.get("database-url") == values["postgresql"]["url"], "Secret: database-url differs from postgresql.url")
        c.check(decoded.get("database-url-orders") == values["postgresql"]["schemas"]["orders"]["url"],
                "Secret: database-url-orders differs from postgresql.schemas.orders.url")
        c.check("database-url-inventory" not in decoded, "Secret: stores an inventory URL although it comes from an existing Secret")
        c.check(decoded.get("redis-url") == values["redis"]["url"], "Secret: redis-url differs from redis.url")
        c.check(decoded.get("webhook-secret") == values["notifySvc"]["webhook"]["secret"], "Secret: webhook-secret differs")
    for credential in ALL_FEATURES_SECRETS:
        c.check(credential not in yaml.safe_dump(cm), f"ConfigMap contains the credential {credential!r}")

    # HPAs: exactly the three called services, autoscaling/v2, and their Deployments leave replicas to them.
    hpas = {h["metadata"]["name"]: h for h in r.kind("HorizontalPodAutoscaler")}
    c.check(set(hpas) == {name_of(x) for x in API_SERVICES}, f"HPAs are {sorted(hpas)}, want order-api, inventory-svc, notify-svc")
    for name, hpa in hpas.items():
        c.check(hpa["apiVersion"] == "autoscaling/v2", f"HPA/{name}: apiVersion {hpa['apiVersion']}")
        target = hpa["spec"]["scaleTargetRef"]
        c.check(target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}, f"HPA/{name}: scaleTargetRef {target}")
        c.check(1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], f"HPA/{name}: min/max replicas")
        c.check(any(m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]), f"HPA/{name}: no cpu metric")
        dep = r.get("Deployment", name)
        c.check(dep is not None and "replicas" not in dep["spec"], f"Deployment/{name}: sets replicas although an HPA owns them")
    c.check(len(hpas.get(name_of("order-api"), {}).get("spec", {}).get("metrics", [])) == 2, "HPA order-api: memory metric missing")

    # KEDA ScaledObject on the worker's consumer-group lag.
    scaled = r.kind("ScaledObject")
    if c.check(len(scaled) == 1, f"want one ScaledObject, got {len(scaled)}"):
        so = scaled[0]
        worker = name_of("consumer-worker")
        c.check(so["apiVersion"] == "keda.sh/v1alpha1", f"ScaledObject: apiVersion {so['apiVersion']}")
        c.check(so["spec"]["scaleTargetRef"].get("name") == worker, f"ScaledObject: scaleTargetRef.name {so['spec']['scaleTargetRef'].get('name')}, want {worker}")
        c.check(so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"], "ScaledObject: min > max")
        triggers = so["spec"].get("triggers") or []
        c.check(bool(triggers) and triggers[0].get("type") == "kafka", "ScaledObject: triggers[0].type is not kafka")
        for t in triggers:
            md = t.get("metadata") or {}
            c.check(t.get("type") == "kafka", f"ScaledObject: trigger type {t.get('type')}")
            for key in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold"):
                c.check(bool(md.get(key)), f"ScaledObject: trigger metadata.{key} missing")
            c.check(md.get("bootstrapServers") == cm["data"]["ORDERFLOW_KAFKA_BROKERS"], "ScaledObject: bootstrapServers differ from ORDERFLOW_KAFKA_BROKERS")
            c.check(md.get("consumerGroup") == cm["data"]["ORDERFLOW_WORKER_GROUP_ID"], "ScaledObject: consumerGroup differs from ORDERFLOW_WORKER_GROUP_ID")
            c.check(isinstance(md.get("lagThreshold"), str) and md["lagThreshold"].isdigit(), "ScaledObject: lagThreshold must be a string of digits")
            c.check(all(isinstance(v, str) for v in md.values()), "ScaledObject: trigger metadata values must be strings")
            c.check(t.get("authenticationRef", {}).get("name") == "kafka-auth", "ScaledObject: authenticationRef not wired")
        topics = [t["metadata"].get("topic") for t in triggers]
        want = [values["kafka"]["topicPrefix"] + t for t in rust_topics()]
        c.check(topics == want, f"ScaledObject: topics {topics}, want {want}")
        dep = r.get("Deployment", worker)
        c.check(dep is not None and "replicas" not in dep["spec"], "consumer-worker Deployment sets replicas although KEDA owns them")

    # NetworkPolicies: one per service, selecting its pods, opening its gRPC port.
    nps = {n["metadata"]["name"]: n for n in r.kind("NetworkPolicy")}
    c.check(set(nps) == {name_of(x) for x in COMPONENTS}, f"NetworkPolicies are {sorted(nps)}, want one per service")
    for name, np in nps.items():
        dep = r.get("Deployment", name)
        if dep:
            c.check(selects(np["spec"]["podSelector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"]), f"NetworkPolicy/{name}: podSelector misses its pods")
        ports = [p.get("port") for rule in np["spec"].get("ingress", []) for p in rule.get("ports", [])]
        c.check("grpc" in ports and "metrics" in ports, f"NetworkPolicy/{name}: ingress ports {ports}")
        c.check("Egress" in np["spec"]["policyTypes"], f"NetworkPolicy/{name}: egress.restrict=true but no Egress policy")
        egress_ports = [p.get("port") for rule in np["spec"].get("egress", []) for p in rule.get("ports", [])]
        c.check(53 in egress_ports, f"NetworkPolicy/{name}: restricted egress must allow DNS")
    inv = nps.get(name_of("inventory-svc"), {})
    grpc_rule = next((rule for rule in inv.get("spec", {}).get("ingress", []) if any(p.get("port") == "grpc" for p in rule.get("ports", []))), {})
    c.check(bool(grpc_rule.get("from")), "NetworkPolicy inventory-svc: gRPC must not be open to everyone")

    # Prometheus Operator: ServiceMonitor for the Services, PodMonitor for the worker.
    services = {s["metadata"]["name"]: s for s in r.kind("Service")}
    sms = r.kind("ServiceMonitor")
    if c.check(len(sms) == 1, f"want one ServiceMonitor, got {len(sms)}"):
        sm = sms[0]
        c.check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor: apiVersion")
        c.check(sm["metadata"]["labels"].get("release") == "kube-prometheus-stack", "ServiceMonitor: serviceMonitor.labels not applied")
        selected = set()
        for name, svc in services.items():
            labels = svc["metadata"]["labels"]
            exprs_ok = all(labels.get(e["key"]) in e["values"] for e in sm["spec"]["selector"].get("matchExpressions", []))
            if selects(sm["spec"]["selector"].get("matchLabels"), labels) and exprs_ok:
                selected.add(name)
                c.check("metrics" in {p["name"] for p in svc["spec"]["ports"]}, f"Service/{name}: no metrics port for the ServiceMonitor")
        c.check(selected == {name_of(x) for x in API_SERVICES}, f"ServiceMonitor selects {sorted(selected)}")
        c.check([e.get("port") for e in sm["spec"]["endpoints"]] == ["metrics"], "ServiceMonitor: endpoint port is not metrics")
        c.check(sm["spec"]["namespaceSelector"].get("matchNames") == [NAMESPACE], "ServiceMonitor: namespaceSelector")
    pms = r.kind("PodMonitor")
    if c.check(len(pms) == 1, f"want one PodMonitor (consumer-worker has no Service), got {len(pms)}"):
        pm = pms[0]
        worker = r.get("Deployment", name_of("consumer-worker"))
        c.check(pm["apiVersion"] == "monitoring.coreos.com/v1", "PodMonitor: apiVersion")
        if worker:
            c.check(selects(pm["spec"]["selector"]["matchLabels"], worker["spec"]["template"]["metadata"]["labels"]), "PodMonitor: does not select consumer-worker pods")
        c.check([e.get("port") for e in pm["spec"]["podMetricsEndpoints"]] == ["metrics"], "PodMonitor: endpoint port is not metrics")

    # The webhook key is a mounted file, not an env value.
    notify = r.get("Deployment", name_of("notify-svc"))
    if notify:
        ctr = notify["spec"]["template"]["spec"]["containers"][0]
        env = env_map(ctr)
        path = env.get("ORDERFLOW_NOTIFY_WEBHOOK_SECRET_FILE", {}).get("value", "")
        source = (mounted_files(notify["spec"]["template"]["spec"], ctr).get(path) or {}).get("source")
        c.check(source == ("secret", PREFIX, "webhook-secret"), f"notify-svc: ORDERFLOW_NOTIFY_WEBHOOK_SECRET_FILE is {source}, want the chart Secret's webhook-secret")
        c.check("ORDERFLOW_NOTIFY_WEBHOOK_SECRET" not in env, "notify-svc: the webhook key must not be a plain env var")
        c.check(cm["data"].get("ORDERFLOW_NOTIFY_WEBHOOK_URL") == values["notifySvc"]["webhook"]["url"], "ConfigMap: webhook URL")
        c.check(notify["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 60, "notify-svc: terminationGracePeriodSeconds not applied")

    # Per-service values reach their pods; extraEnv replaces, never duplicates.
    order = r.get("Deployment", name_of("order-api"))
    if order:
        pod = order["spec"]["template"]["spec"]
        env = env_map(pod["containers"][0])
        c.check(env.get("ORDERFLOW_MAX_CONCURRENT_REQUESTS", {}).get("value") == "1024", "order-api: its extraEnv must win over the global one")
        c.check(env.get("ORDERFLOW_CREATE_TIMEOUT_MS", {}).get("value") == "8000", "order-api: extraEnv not applied")
        c.check(pod.get("priorityClassName") == "orderflow-critical", "order-api: priorityClassName not applied")
        tsc = pod.get("topologySpreadConstraints") or [{}]
        c.check(selects(tsc[0].get("labelSelector", {}).get("matchLabels"), order["spec"]["template"]["metadata"]["labels"]),
                "order-api: a topology spread constraint without labelSelector must get the pod's labels")
        c.check(pod.get("imagePullSecrets") == [{"name": "registry-credentials"}], "order-api: imagePullSecrets not applied")
        c.check(pod["containers"][0]["image"] == "registry.example.com/orderflow:0.1.0-ci", "order-api: image repository/tag not applied")
    for component in COMPONENTS:
        dep = r.get("Deployment", name_of(component))
        if dep and component != "order-api":
            env = env_map(dep["spec"]["template"]["spec"]["containers"][0])
            c.check(env.get("ORDERFLOW_MAX_CONCURRENT_REQUESTS", {}).get("value") == "4096", f"{component}: the global extraEnv is not applied")
    pdbs = {p["metadata"]["name"]: p for p in r.kind("PodDisruptionBudget")}
    c.check(name_of("consumer-worker") not in pdbs, "consumer-worker PDB rendered although pdb.enabled=false")
    c.check(pdbs.get(name_of("order-api"), {}).get("spec", {}).get("minAvailable") == 2
            and "maxUnavailable" not in pdbs.get(name_of("order-api"), {}).get("spec", {}), "order-api PDB: minAvailable 2 alone expected")
    c.check(cm["data"].get("ORDERFLOW_CONSUMER_BATCH_MAX_MESSAGES") == "1000000", "ConfigMap: config entries must keep integers exact")
    jobs = r.kind("Job")
    c.check(len(jobs) == len(SCHEMAS) and all(j["spec"]["template"]["spec"].get("serviceAccountName") == "orderflow-migrator" for j in jobs),
            "migration.serviceAccountName not applied to every migration Job")


def check_existing_secrets(c: Checker, helm_bin: str) -> None:
    c.scenario = "existing-secrets"
    r, values = render_values(helm_bin, SCENARIO_VALUES[c.scenario])
    check_common(c, r, values=values, redis_secret=("redis-credentials", "redis-url"))
    check_migration(c, r, values=values)
    for doc in r.kind("Deployment") + r.kind("Job"):
        pod = doc["spec"]["template"]["spec"]
        path = env_map(pod["containers"][0]).get("ORDERFLOW_DATABASE_URL_FILE", {}).get("value", "")
        source = (mounted_files(pod, pod["containers"][0]).get(path) or {}).get("source")
        c.check(source == ("secret", "pg-credentials", "url"), f"{doc['kind']}/{doc['metadata']['name']}: database URL from {source}, want postgresql.existingSecret")
    c.check(not r.kind("Secret"), f"no chart Secret expected when every credential is in an existing one, got {sorted(r.names('Secret'))}")
    notify = r.get("Deployment", name_of("notify-svc"))
    if notify:
        ctr = notify["spec"]["template"]["spec"]["containers"][0]
        path = env_map(ctr).get("ORDERFLOW_NOTIFY_WEBHOOK_SECRET_FILE", {}).get("value", "")
        c.check((mounted_files(notify["spec"]["template"]["spec"], ctr).get(path) or {}).get("source") == ("secret", "webhook-credentials", "webhook-secret"),
                "notify-svc: webhook key not mounted from notifySvc.webhook.existingSecret")


def check_schema_variants(c: Checker, helm_bin: str) -> None:
    """A database role per schema: URLs as values, then existing Secrets; and that check_schema_urls
    catches a service or Job given another schema's URL."""
    c.scenario = "schema-roles"
    r, values = render_values(helm_bin, SCENARIO_VALUES[c.scenario])
    check_common(c, r, values=values)
    check_migration(c, r, values=values)
    secret = r.get("Secret", PREFIX)
    if c.check(secret is not None, f"Secret {PREFIX} missing"):
        decoded = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        for schema in SCHEMAS:
            c.check(decoded.get(f"database-url-{schema}") == values["postgresql"]["schemas"][schema]["url"],
                    f"Secret: database-url-{schema} differs from postgresql.schemas.{schema}.url")
        c.check("database-url" not in decoded, "Secret: stores a default database URL, which no schema uses")
    # Each role's password reaches its own schema's workloads only.
    urls = database_urls(r)
    for schema, (_, components) in SCHEMAS.items():
        password = f"{schema.capitalize()}-Owner-Pw"
        holders = {w for w, url in urls.items() if isinstance(url, str) and f":{password}@" in url}
        want = {f"Deployment/{name_of(x)}" for x in components} | {f"Job/{job_name(schema)}"}
        c.check(holders == want, f"the {schema} role's URL reaches {sorted(holders)}, want exactly {sorted(want)}")

    c.scenario = "schema-url-check-bites"
    probe_render, _ = render_values(helm_bin, SCENARIO_VALUES["schema-roles"])

    def pg_source(doc: dict) -> dict:
        volume = next(v for v in doc["spec"]["template"]["spec"]["volumes"] if v["name"] == "postgresql-files")
        return next(s["secret"] for s in volume["projected"]["sources"] if "secret" in s)

    pg_source(probe_render.get("Deployment", name_of("consumer-worker")))["items"][0]["key"] = "database-url-inventory"
    pg_source(probe_render.get("Job", job_name("notify")))["name"] = job_name("inventory")
    probe = Checker()
    check_schema_urls(probe, probe_render, values)
    for schema in SCHEMAS:
        c.check(any(f"the {schema} schema's URL reaches" in f for f in probe.failures), f"check_schema_urls does not catch the {schema} schema's misrouted URL")
    c.check(len(probe.failures) == 3, f"check_schema_urls: want exactly the 3 failures of the 2 planted mistakes, got {probe.failures}")

    c.scenario = "schema-existing-secrets"
    r, values = render_values(helm_bin, SCENARIO_VALUES[c.scenario])
    check_common(c, r, values=values)
    check_migration(c, r, values=values)
    secret = r.get("Secret", PREFIX) or {}
    c.check(not [k for k in (secret.get("data") or {}) if k.startswith("database-url")],
            f"Secret {PREFIX}: stores database URLs {sorted(secret.get('data') or {})} although every schema has an existing Secret")
    for schema, (_, components) in SCHEMAS.items():
        own = values["postgresql"]["schemas"][schema]
        for workload in [r.get("Deployment", name_of(x)) for x in components] + [r.get("Job", job_name(schema))]:
            if workload is None:
                continue
            pod = workload["spec"]["template"]["spec"]
            path = env_map(pod["containers"][0]).get("ORDERFLOW_DATABASE_URL_FILE", {}).get("value", "")
            source = (mounted_files(pod, pod["containers"][0]).get(path) or {}).get("source")
            c.check(source == ("secret", own["existingSecret"], own["existingSecretKey"]),
                    f"{workload['kind']}/{workload['metadata']['name']}: database URL from {source}, want postgresql.schemas.{schema}'s Secret")


def check_feature_variants(c: Checker, helm_bin: str) -> None:
    """The optional features one at a time and in other combinations than all-features."""
    c.scenario = "auth-tokens-only"
    r, values = render_values(helm_bin, SCENARIO_VALUES[c.scenario])
    check_common(c, r, values=values)
    check_migration(c, r, values=values)

    c.scenario = "jwt-only"
    r, values = render_values(helm_bin, SCENARIO_VALUES[c.scenario])
    check_common(c, r, values=values)
    check_migration(c, r, values=values)

    c.scenario = "features-off"
    r, values = render_values(helm_bin, SCENARIO_VALUES[c.scenario])
    check_common(c, r, values=values)
    for dep in r.kind("Deployment"):
        files = mounted_files(dep["spec"]["template"]["spec"], dep["spec"]["template"]["spec"]["containers"][0])
        c.check(not any(p.startswith("/etc/orderflow/auth/") for p in files), f"Deployment/{dep['metadata']['name']}: auth files mounted with auth.enabled=false")


def check_variants(c: Checker, helm_bin: str) -> None:
    c.scenario = "metrics-off"
    r, _ = render_values(helm_bin, SCENARIO_VALUES[c.scenario])
    check_common(c, r, metrics=False)
    c.check(not r.kind("ServiceMonitor") and not r.kind("PodMonitor"), "monitors rendered with metrics.enabled=false")

    c.scenario = "migration-off"
    r, _ = render_values(helm_bin, SCENARIO_VALUES[c.scenario])
    c.check(not r.kind("Job") and not [s for s in r.kind("Secret") if hook_set(s)],
            "migration Jobs or their hook Secrets rendered with migration.enabled=false")
    c.check(not r.kind("Pod"), "helm test pod rendered with tests.enabled=false")

    c.scenario = "release-name"
    r = render(helm_bin, release="orderflow-prod")
    check_common(c, r, prefix="orderflow-prod")

    c.scenario = "dashboard-own-label"
    r, values = render_values(helm_bin, SCENARIO_VALUES[c.scenario])
    check_common(c, r, values=values)
    check_dashboard_configmap(c, r, values)

    c.scenario = "rollout-on-change"
    base = render(helm_bin)
    config_changed = render(helm_bin, "--set", "kafka.brokers=other:9092")
    secret_changed = render(helm_bin, "--set", "postgresql.url=postgres://u:p@elsewhere:5432/db")

    def annotations(rr: Render) -> dict:
        return rr.get("Deployment", name_of("order-api"))["spec"]["template"]["metadata"]["annotations"]

    c.check(annotations(base)["checksum/config"] != annotations(config_changed)["checksum/config"], "checksum/config does not change with the ConfigMap")
    c.check(annotations(base)["checksum/secret"] != annotations(secret_changed)["checksum/secret"], "checksum/secret does not change with the Secret")
    c.check(annotations(base)["checksum/secret"] == annotations(config_changed)["checksum/secret"], "checksum/secret changes without a Secret change")
    schema_changed = render(helm_bin, "--set", "postgresql.schemas.notify.url=postgres://notify_owner:p@elsewhere:5432/db")
    c.check(annotations(base)["checksum/secret"] != annotations(schema_changed)["checksum/secret"], "checksum/secret does not change with a schema's URL")


# The custom resources kubernetes-validate has no schema for: the fields their CRDs require, and
# the documented fields the chart may use (a subset of each CRD's properties; a typo such as
# `maxReplicas` for `maxReplicaCount` would otherwise be dropped silently by the API server).
CRD_REQUIRED = {
    "ScaledObject": ["spec.scaleTargetRef.name", "spec.triggers"],        # KEDA v2 keda.sh_scaledobjects
    "ServiceMonitor": ["spec.selector", "spec.endpoints"],               # prometheus-operator v0.84
    "PodMonitor": ["spec.selector", "spec.podMetricsEndpoints"],
}
CRD_SPEC_FIELDS = {
    "ScaledObject": {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
                     "minReplicaCount", "maxReplicaCount", "advanced", "fallback", "triggers"},
    "ServiceMonitor": {"jobLabel", "targetLabels", "podTargetLabels", "endpoints", "selector", "selectorMechanism",
                       "namespaceSelector", "sampleLimit", "targetLimit", "scrapeProtocols", "attachMetadata", "scrapeClass"},
    "PodMonitor": {"jobLabel", "podTargetLabels", "podMetricsEndpoints", "selector", "selectorMechanism",
                   "namespaceSelector", "sampleLimit", "targetLimit", "scrapeProtocols", "attachMetadata", "scrapeClass"},
}
KEDA_TRIGGER_FIELDS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
KEDA_KAFKA_METADATA = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
                       "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
                       "limitToPartitionsWithLag", "partitionLimitation", "version", "sasl", "tls", "unsafeSsl"}
SCRAPE_ENDPOINT_FIELDS = {"port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
                          "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings", "tlsConfig",
                          "authorization", "basicAuth", "oauth2", "followRedirects", "enableHttp2", "filterRunning"}
PROM_DURATION = re.compile(r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$")


def dig(doc: dict, path: str):
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def check_custom_resources(c: Checker, r: Render) -> None:
    """ScaledObject, ServiceMonitor, PodMonitor: required fields present, only documented fields used."""
    for doc in (d for d in r.docs if d["kind"] in CRD_KINDS):
        kind, where = doc["kind"], f"{doc['kind']}/{doc['metadata']['name']}"
        for path in CRD_REQUIRED[kind]:
            c.check(dig(doc, path) not in (None, "", [], {}), f"{where}: required field {path} missing")
        unknown = set(doc.get("spec") or {}) - CRD_SPEC_FIELDS[kind]
        c.check(not unknown, f"{where}: spec fields {sorted(unknown)} are not fields of the {kind} CRD")
        for t in doc["spec"].get("triggers") or []:
            c.check(set(t) <= KEDA_TRIGGER_FIELDS and {"type", "metadata"} <= set(t), f"{where}: trigger fields {sorted(t)}")
            md = t.get("metadata") or {}
            c.check(all(isinstance(v, str) for v in md.values()), f"{where}: trigger metadata values must be strings (the CRD says so)")
            if t.get("type") == "kafka":
                c.check(set(md) <= KEDA_KAFKA_METADATA, f"{where}: kafka trigger metadata {sorted(set(md) - KEDA_KAFKA_METADATA)} undocumented")
            if "authenticationRef" in t:
                c.check(bool(t["authenticationRef"].get("name")), f"{where}: authenticationRef.name missing")
        for e in (doc["spec"].get("endpoints") or []) + (doc["spec"].get("podMetricsEndpoints") or []):
            c.check(set(e) <= SCRAPE_ENDPOINT_FIELDS, f"{where}: endpoint fields {sorted(set(e) - SCRAPE_ENDPOINT_FIELDS)} undocumented")
            for key in ("interval", "scrapeTimeout"):
                if key in e:
                    c.check(bool(PROM_DURATION.match(str(e[key]))), f"{where}: {key} {e[key]!r} is not a Prometheus duration")


# --- The Grafana dashboard ---------------------------------------------------------------------
# dashboards/orderflow.json ships as an optional ConfigMap for Grafana's dashboard sidecar
# (grafanaDashboard.*). Its PromQL may name only metrics the services expose, and those are read
# out of telemetry/src/metrics.rs, where every family is registered once: the process's registry is
# `Registry::with_prefix("orderflow")`, so each name gets "orderflow_" in front, and
# prometheus-client's text encoding exposes a counter as <name>_total, a histogram as
# <name>_bucket, <name>_sum and <name>_count, a gauge as <name>. scripts/check-dashboard.sh asks
# the running services the same question (it imports the functions below).
METRICS_RS = TELEMETRY_SRC / "metrics.rs"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
DASHBOARD_KEY = "orderflow.json"
METRICS_STRUCT = re.compile(r"^pub struct Metrics\s*\{(.*?)^\}", re.M | re.S)
METRICS_FIELD = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(\w+)\s*:\s*(.+?),\s*$", re.M)
METRICS_REGISTER = re.compile(
    r'\bregistry\.register\(\s*"([a-zA-Z_:][a-zA-Z0-9_:]*)"\s*,\s*"(?:[^"\\]|\\.)*"\s*,\s*\w+\.(\w+)\.clone\(\)\s*,?\s*\)', re.S)
METRIC_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# What is not a metric name in PromQL: keywords, and the label lists of by/without/on/ignoring/group_*.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset", "inf", "nan"}
PROMQL_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
NAMESPACE_MATCHER = 'namespace=~"$namespace"'


def dashboard_file() -> Path:
    return CHART / "dashboards" / DASHBOARD_KEY


@functools.lru_cache(maxsize=None)
def metric_families() -> dict[str, str]:
    """telemetry/src/metrics.rs: every registered family's exposed name (prefix included) → its type."""
    text = METRICS_RS.read_text()
    prefix = re.search(r'Registry::with_prefix\("([^"]+)"\)', text)
    struct = METRICS_STRUCT.search(text)
    fields = dict(METRICS_FIELD.findall(struct.group(1))) if struct else {}
    families = {}
    for name, field_name in METRICS_REGISTER.findall(text):
        ty = fields.get(field_name, "")
        kind = next((k for k, word in (("histogram", "Histogram"), ("counter", "Counter"), ("gauge", "Gauge")) if word in ty), "?")
        families[f"{prefix.group(1)}_{name}" if prefix else name] = kind
    return families


def exposed_metric_names() -> dict[str, str]:
    """Every sample name the services expose → the family it belongs to."""
    return {family + suffix: family for family, kind in metric_families().items() for suffix in METRIC_SUFFIXES.get(kind, ())}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (no functions, keywords, labels or strings)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = PROMQL_LABEL_LIST.sub("", text)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        before = text[m.start() - 1] if m.start() else " "
        if before.isdigit() or before in ".$" or text[m.end():].lstrip().startswith("(") or m.group(0).lower() in PROMQL_KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def variable_metric_names(query: str) -> set[str]:
    """The metric names of a Prometheus template variable's query (label_values(metric, label) or PromQL)."""
    m = re.fullmatch(r"\s*label_values\(\s*(?:([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{[^}]*\})?\s*,\s*)?\w+\s*\)\s*", query)
    if m:
        return {m.group(1)} if m.group(1) else set()
    inner = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
    return promql_metric_names(inner.group(1) if inner else query)


def dashboard_panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside (collapsed) rows included, in order."""
    out = []
    for panel in dashboard.get("panels") or []:
        out.append(panel)
        out.extend(panel.get("panels") or [])
    return out


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and of every query variable."""
    out = []
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets") or []:
            out.append((f"panel {panel.get('id')} {panel.get('title')!r} target {target.get('refId')}", target.get("expr") or ""))
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") == "query":
            query = var.get("query")
            out.append((f"variable ${var.get('name')}", (query.get("query") if isinstance(query, dict) else query) or ""))
    return out


def dashboard_metric_names(dashboard: dict) -> dict[str, list[str]]:
    """Every metric name the dashboard's queries use → where."""
    names: dict[str, list[str]] = {}
    for where, query in dashboard_queries(dashboard):
        found = variable_metric_names(query) if where.startswith("variable") else promql_metric_names(query)
        for name in found:
            names.setdefault(name, []).append(where)
    return names


def without_dashboard_filters(expr: str) -> str:
    """A dashboard expression without its $namespace matchers, and without whitespace."""
    text = re.sub(re.escape(NAMESPACE_MATCHER) + r"\s*,?\s*", "", expr)
    text = re.sub(r",\s*\}", "}", text).replace("{}", "")
    return re.sub(r"\s+", "", text)


def documented_dashboard_queries() -> list[str]:
    """The PromQL of docs/operations.md's "Dashboards" table (every `…` of its query column)."""
    section = re.search(r"^## Dashboards\n(.*?)(?=^#)", OPERATIONS_DOC.read_text(), re.M | re.S)
    queries = []
    for line in (section.group(1) if section else "").splitlines():
        row = re.fullmatch(r"\|\s*([^|]+?)\s*\|\s*(`.+`)\s*\|", line.strip())
        if row:
            queries += re.findall(r"`([^`]+)`", row.group(2))
    return queries


def proto_rpcs() -> dict[str, dict[str, bool]]:
    """Full gRPC service name → its RPCs → whether it streams (either way)."""
    out = {}
    for path in PROTO_DIR.rglob("*.proto"):
        text = re.sub(r"//[^\n]*", "", path.read_text())
        package = re.search(r"^package\s+([\w.]+)\s*;", text, re.M)
        for service, body in re.findall(r"^service\s+(\w+)\s*\{(.*?)^\}", text, re.M | re.S):
            rpcs = re.findall(r"\brpc\s+(\w+)\s*\(\s*(stream\s+)?[\w.]+\s*\)\s*returns\s*\(\s*(stream\s+)?[\w.]+\s*\)", body)
            out[f"{package.group(1)}.{service}" if package else service] = {name: bool(a or b) for name, a, b in rpcs}
    return out


def check_dashboard_file(c: Checker) -> dict | None:
    """dashboards/orderflow.json: valid, every panel queries Prometheus through $datasource, every
    metric it names is one the services expose, it covers docs/operations.md's queries and every RPC."""
    c.scenario = "dashboard"
    families = metric_families()
    text = METRICS_RS.read_text()
    c.check(len(families) == len(re.findall(r"\bregistry\.register\(", text)) and len(families) >= 20,
            f"telemetry/src/metrics.rs: parsed {len(families)} families of {len(re.findall(r'registry.register[(]', text))} registry.register calls (the regex or the source changed)")
    c.check(all(name.startswith("orderflow_") for name in families), f"telemetry/src/metrics.rs: the registry prefix is not orderflow: {sorted(families)[:3]}")
    unknown_kind = sorted(name for name, kind in families.items() if kind == "?")
    c.check(not unknown_kind, f"telemetry/src/metrics.rs: no Counter/Gauge/Histogram type found for {unknown_kind}")
    elsewhere = [str(p.relative_to(ROOT)) for crate in ("runtime", "kafka", "telemetry", "grpc", "config", *COMPONENTS) for p in (ROOT / crate / "src").rglob("*.rs")
                 if p != METRICS_RS and re.search(r"\bRegistry::|\.register\(\s*\"", p.read_text())]
    c.check(not elsewhere, f"metrics registered outside telemetry/src/metrics.rs, which the dashboard checks do not read: {elsewhere}")

    try:
        dashboard = json.loads(dashboard_file().read_text())
    except (OSError, ValueError) as error:
        c.check(False, f"{dashboard_file()}: not valid JSON ({error})")
        return None
    check_dashboard(c, dashboard)
    return dashboard


def check_dashboard(c: Checker, dashboard: dict) -> None:
    """The dashboard's panels, variables and queries (see check_dashboard_file)."""
    c.check(bool(dashboard.get("title")) and bool(dashboard.get("uid")) and len(dashboard.get("uid", "")) <= 40,
            "dashboard: title and uid (at most 40 characters) must be set")
    c.check(dashboard.get("id") is None, "dashboard: must not carry a database id (Grafana assigns one)")
    variables = {v.get("name"): v for v in (dashboard.get("templating") or {}).get("list") or []}
    ds = variables.get("datasource") or {}
    c.check(ds.get("type") == "datasource" and ds.get("query") == "prometheus",
            "dashboard: needs a `datasource` variable of type datasource, query prometheus")
    namespace = variables.get("namespace") or {}
    c.check(namespace.get("includeAll") is True and namespace.get("allValue") == ".*",
            "dashboard: $namespace must offer All as .* (it then also matches series without a namespace label)")
    own_ds = {"${datasource}", "$datasource"}
    panels = dashboard_panels(dashboard)
    ids = [p.get("id") for p in panels]
    c.check(len(ids) == len(set(ids)) and None not in ids, f"dashboard: panel ids must be set and unique, got {ids}")
    for panel in panels:
        where = f"dashboard panel {panel.get('id')} {panel.get('title')!r}"
        grid = panel.get("gridPos") or {}
        c.check(all(isinstance(grid.get(k), int) for k in "hwxy") and grid["x"] + grid["w"] <= 24, f"{where}: gridPos {grid} outside the 24 columns")
        if panel.get("type") == "row":
            c.check(not panel.get("targets"), f"{where}: a row has no queries")
            continue
        targets = panel.get("targets") or []
        c.check(any((t.get("expr") or "").strip() for t in targets), f"{where}: no target with a PromQL expr")
        c.check((panel.get("datasource") or {}).get("uid") in own_ds, f"{where}: datasource is not ${{datasource}}")
        refs = [t.get("refId") for t in targets]
        c.check(len(refs) == len(set(refs)) and None not in refs, f"{where}: refIds {refs} must be set and unique")
        for t in targets:
            c.check((t.get("datasource") or {}).get("uid") in own_ds, f"{where} target {t.get('refId')}: datasource is not ${{datasource}}")
    c.check(sum(p.get("type") != "row" for p in panels) >= 12, "dashboard: too few panels")

    exposed = exposed_metric_names()
    used = dashboard_metric_names(dashboard)
    c.check(bool(used), "dashboard: no metric name found in its queries")
    for name, wheres in sorted(used.items()):
        c.check(name in exposed, f"dashboard: {wheres[0]} uses {name}, which the services do not expose "
                                 f"(not one of the {len(exposed)} sample names of the families telemetry/src/metrics.rs registers)")
    for where, expr in dashboard_queries(dashboard):
        if where.startswith("variable"):
            continue
        for name in promql_metric_names(expr):
            for m in re.finditer(rf"(?<![\w:]){re.escape(name)}(?![\w:])\s*(\{{[^}}]*\}})?", expr):
                c.check(NAMESPACE_MATCHER in (m.group(1) or ""), f"dashboard: {where}: {name} without {NAMESPACE_MATCHER}")

    # docs/operations.md's "Dashboards" queries are all there (with the $namespace matcher added).
    documented = documented_dashboard_queries()
    c.check(len(documented) >= 10, f"docs/operations.md: found {len(documented)} dashboard queries (the table or the parser changed)")
    exprs = {without_dashboard_filters(expr) for where, expr in dashboard_queries(dashboard) if not where.startswith("variable")}
    for query in documented:
        c.check(without_dashboard_filters(query) in exprs, f"dashboard: lacks docs/operations.md's query {query}")

    # RED per RPC: a row "<component>: <gRPC service>" per service, whose panels select exactly its
    # RPCs (method=~"…"), the latency panels exactly its unary ones (a stream lasts its subscription).
    rpcs = proto_rpcs()
    rows: dict[str, list[dict]] = {}
    current = None
    for panel in panels:
        if panel.get("type") == "row":
            current = panel.get("title")
            rows[current] = []
        elif current is not None:
            rows[current].append(panel)
    for component, spec in COMPONENTS.items():
        service = spec[3]
        title = f"{component}: {service}"
        if not c.check(title in rows, f"dashboard: no row {title!r} (RED per RPC of {component})"):
            continue
        if not c.check(service in rpcs, f"proto/: no service {service}"):
            continue
        every = set(rpcs[service])
        unary = {name for name, streams in rpcs[service].items() if not streams}
        kinds = set()
        for panel in rows[title]:
            for t in panel.get("targets") or []:
                expr = t.get("expr") or ""
                selected = [set(m.split("|")) for m in re.findall(r'method=~"([^"]*)"', expr)]
                c.check(bool(selected), f"dashboard row {title!r} panel {panel.get('title')!r}: selects no method=~\"…\"")
                latency = "orderflow_grpc_server_handling_seconds_bucket" in expr
                kinds.add("latency" if latency else "errors" if 'code!="OK"' in expr else "requests")
                for methods in selected:
                    want = unary if latency else every
                    c.check(methods == want, f"dashboard row {title!r} panel {panel.get('title')!r}: methods {sorted(methods)}, want {sorted(want)}")
        c.check(kinds == {"requests", "errors", "latency"}, f"dashboard row {title!r}: has {sorted(kinds)}, want requests, errors and latency")
        c.check(any("histogram_quantile(0.5," in (t.get("expr") or "") for p in rows[title] for t in p.get("targets") or [])
                and any("histogram_quantile(0.99," in (t.get("expr") or "") for p in rows[title] for t in p.get("targets") or []),
                f"dashboard row {title!r}: latency needs p50 and p99")


def check_dashboard_check_bites(c: Checker, dashboard: dict) -> None:
    """check_dashboard really fails on drift: names the services do not expose, a selector without
    $namespace, an RPC left out of its row, a docs query dropped."""
    c.scenario = "dashboard-drift-caught"
    planted = json.loads(json.dumps(dashboard))
    panels = [p for p in dashboard_panels(planted) if p.get("type") != "row"]
    ns = NAMESPACE_MATCHER
    panels[0]["targets"].append({"refId": "Y", "datasource": panels[0]["datasource"],
                                 "expr": f'sum(rate(kafka_consume_batch_seconds_bucket{{{ns}}}[5m])) + sum(orderflow_lock_wait_seconds{{{ns}}})'})
    panels[1]["targets"].append({"refId": "Z", "datasource": panels[1]["datasource"],
                                 "expr": "sum(rate(orderflow_reservations[5m])) / sum(rate(orderflow_grpc_server_shed_total[5m]))"})
    for panel in dashboard_panels(planted):
        for t in panel.get("targets") or []:
            t["expr"] = (t.get("expr") or "").replace("|ReconcileStock", "")
            if t["expr"].startswith("sum(rate(orderflow_grpc_server_handled_total") and "CreateOrder" in t["expr"]:
                t["expr"] = t["expr"].replace("[1m]", "[2m]")
    probe = Checker()
    check_dashboard(probe, planted)
    needles = ["uses kafka_consume_batch_seconds_bucket,", "uses orderflow_lock_wait_seconds,", "uses orderflow_reservations,",
               "orderflow_reservations without", "orderflow_grpc_server_shed_total without",
               "'inventory-svc: orderflow.inventory.v1.InventoryService' panel 'Requests per second by RPC': methods",
               "lacks docs/operations.md's query sum(rate(orderflow_grpc_server_handled_total"]
    for needle in needles:
        c.check(any(needle in f for f in probe.failures), f"check_dashboard does not catch: {needle}")
    c.check(len(probe.failures) == 10, f"check_dashboard: want exactly the 10 planted failures, got {probe.failures}")


def check_dashboard_configmap(c: Checker, r: Render, values: dict) -> None:
    """The dashboard ConfigMap: there exactly when grafanaDashboard.enabled, with the sidecar's label,
    the annotations and namespace of the values, and the dashboard file as its data, unchanged."""
    g = values["grafanaDashboard"]
    name = f"{PREFIX}-dashboard"
    cm = r.get("ConfigMap", name)
    sidecar = [d["metadata"]["name"] for d in r.kind("ConfigMap") if DASHBOARD_KEY in (d.get("data") or {})]
    if not g["enabled"]:
        c.check(cm is None and not sidecar, f"dashboard ConfigMap rendered although grafanaDashboard.enabled is false: {sidecar}")
        return
    if not c.check(cm is not None and sidecar == [name], f"ConfigMap {name} missing (grafanaDashboard.enabled), dashboard ConfigMaps {sidecar}"):
        return
    meta = cm["metadata"]
    labels = meta.get("labels") or {}
    want_labels = {k: v for k, v in (g["labels"] or {}).items() if v is not None}
    c.check(bool(want_labels), "grafanaDashboard.labels is empty: the sidecar would not find the ConfigMap")
    for key, value in want_labels.items():
        c.check(labels.get(key) == value and isinstance(labels.get(key), str), f"ConfigMap {name}: label {key}={labels.get(key)!r}, want {value!r}")
    dropped = {k for k, v in (g["labels"] or {}).items() if v is None}
    c.check(not dropped & set(labels), f"ConfigMap {name}: carries labels {sorted(dropped & set(labels))} set to null in the values")
    c.check((meta.get("annotations") or {}) == {k: v for k, v in (g["annotations"] or {}).items() if v is not None},
            f"ConfigMap {name}: annotations {meta.get('annotations')}, want {g['annotations']}")
    c.check(meta.get("namespace") == (g["namespace"] or None), f"ConfigMap {name}: namespace {meta.get('namespace')!r}, want {g['namespace'] or None!r}")
    data = cm.get("data") or {}
    c.check(set(data) == {DASHBOARD_KEY}, f"ConfigMap {name}: data keys {sorted(data)}, want [{DASHBOARD_KEY}]")
    try:
        rendered = json.loads(data.get(DASHBOARD_KEY, ""))
    except ValueError as error:
        c.check(False, f"ConfigMap {name}: {DASHBOARD_KEY} is not JSON ({error})")
        return
    c.check(rendered == json.loads(dashboard_file().read_text()), f"ConfigMap {name}: {DASHBOARD_KEY} differs from {dashboard_file().name}")
    c.check(len(data[DASHBOARD_KEY].encode()) < 256 * 1024,
            f"ConfigMap {name}: the dashboard is over 256 KiB, too large for `kubectl apply`'s last-applied annotation")


def check_sources(c: Checker) -> None:
    """The facts this file takes for granted match the Rust and proto sources."""
    c.scenario = "sources"
    settings = binary_settings()
    defined = set()
    for crate in ("runtime", "kafka", "telemetry", "grpc", "config", *COMPONENTS):
        for path in (ROOT / crate / "src").rglob("*.rs"):
            defined |= set(ENV_ATTR.findall(path.read_text()))
    missed = defined - all_read_variables()
    c.check(bool(defined) and not missed, f"env = \"ORDERFLOW_…\" outside the clap structs the binaries parse: {sorted(missed)}")
    services = proto_services()
    for component, (_, port, listen_env, grpc_service, _) in COMPONENTS.items():
        default = settings[component].env.get(listen_env) or ""
        c.check(default.endswith(f":{port}"), f"{component}: reads no {listen_env} defaulting to port {port} (got {default!r})")
        c.check(grpc_service in services, f"{component}: readiness service {grpc_service} is not a service in proto/")
    for schema, (binary, _) in SCHEMAS.items():
        c.check("--migrate-only" in settings[binary].flags, f"{binary} has no --migrate-only flag (the {schema} migration Job runs it)")
    schemas = rust_schemas()
    for component in COMPONENTS:
        c.check(schemas.get(component) == COMPONENT_SCHEMA[component],
                f"{component} works in the schema {schemas.get(component)!r} (its process::open_pool), the chart gives it the {COMPONENT_SCHEMA[component]} schema's URL")
    for component in COMPONENTS:
        c.check("OTEL_EXPORTER_OTLP_ENDPOINT" in settings[component].env,
                f"{component}: reads no OTEL_EXPORTER_OTLP_ENDPOINT (the chart's tracing.otlpEndpoint)")
        for name in ("ORDERFLOW_ENVIRONMENT", "ORDERFLOW_AUTH_JWT_KEY_FILE", "ORDERFLOW_AUTH_TOKENS_FILE", "ORDERFLOW_DATABASE_URL_FILE"):
            c.check(name in settings[component].env, f"{component}: reads no {name} (the chart's auth.* / postgresql.*)")
    locked = locked_versions()
    for crate, version in OTEL_SDK_CRATES.items():
        c.check(locked.get(crate) == {version},
                f"Cargo.lock pins {crate} {sorted(locked.get(crate, []))}, OTEL_SDK_VARIABLES was read from {version}: re-read it from the new sources")
    c.check({"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"} <= otel_variables(),
            "telemetry/src/setup.rs: OTEL_SDK_DISABLED / OTEL_TRACES_EXPORTER not found (the regex or the source changed)")
    c.check(bool(rust_topics()), "proto/src/topics.rs: no topics found in ALL (the ScaledObject's triggers are checked against it)")


def check_env_is_read(c: Checker, r: Render) -> None:
    """Every ORDERFLOW_* variable and every --flag the chart gives a binary is one that binary reads.

    Container `env` (and args) must be read by the container's own binary (an OTEL_* variable by
    its telemetry or by the OpenTelemetry SDK, see otel_read_by). The ConfigMap is shared
    by all four services through envFrom (each binary ignores what it does not know), so each of
    its keys must be read by at least one binary that loads it. Service links stay off: with a
    release named "orderflow" they would add ORDERFLOW_<SERVICE>_PORT… variables to every pod.
    """
    settings = binary_settings()
    configmaps = {cm["metadata"]["name"]: cm.get("data") or {} for cm in r.kind("ConfigMap")}
    loaders: dict[str, set[str]] = {}
    for doc in r.kind("Deployment") + r.kind("Job"):
        c.check(doc["spec"]["template"]["spec"].get("enableServiceLinks") is False,
                f"{doc['kind']}/{doc['metadata']['name']}: enableServiceLinks must be false")
        for ctr in doc["spec"]["template"]["spec"]["containers"]:
            where = f"{doc['kind']}/{doc['metadata']['name']} container {ctr['name']}"
            binary = Path((ctr.get("command") or ["?"])[0]).name
            if not c.check(binary in settings, f"{where}: runs {binary!r}, not one of the four binaries"):
                continue
            reads = settings[binary]
            sources = ", ".join(dict.fromkeys(reads.files))
            for e in ctr.get("env", []):
                if e["name"].startswith("ORDERFLOW_"):
                    c.check(e["name"] in reads.env, f"{where}: sets {e['name']}, which {binary} does not read ({sources})")
                elif e["name"].startswith("OTEL_"):
                    c.check(e["name"] in otel_read_by(binary),
                            f"{where}: sets {e['name']}, which neither {binary} nor the OpenTelemetry SDK {OTEL_SDK_CRATES['opentelemetry_sdk']} reads")
            for arg in ctr.get("args", []):
                if arg.startswith("--"):
                    c.check(arg.split("=", 1)[0] in reads.flags, f"{where}: passes {arg}, which is not a flag of {binary}")
            for source in ctr.get("envFrom", []):
                name = (source.get("configMapRef") or {}).get("name")
                if name:
                    loaders.setdefault(name, set()).add(binary)
    for name, binaries in loaders.items():
        for key in configmaps.get(name, {}):
            c.check(any(key in settings[b].env or key in otel_read_by(b) for b in binaries),
                    f"ConfigMap/{name}: {key} is read by none of the binaries that load it ({', '.join(sorted(binaries))})")


def effective_env(r: Render, ctr: dict, name: str, default: str | None) -> str | None:
    """What a variable is in a container: its env value, else the ConfigMap's, else the binary's default."""
    e = env_map(ctr).get(name)
    if e is not None and "value" in e:
        return e["value"]
    for source in ctr.get("envFrom", []):
        cm = r.get("ConfigMap", (source.get("configMapRef") or {}).get("name", ""))
        if cm and name in (cm.get("data") or {}):
            return cm["data"][name]
    return default


def check_cross_settings(c: Checker, r: Render, prefix: str = PREFIX) -> None:
    """Settings the binaries require of each other, with the chart's values and the Rust defaults."""
    order = r.get("Deployment", name_of("order-api", prefix))
    inventory = r.get("Deployment", name_of("inventory-svc", prefix))
    if order is None or inventory is None:
        return
    order_ctr = order["spec"]["template"]["spec"]["containers"][0]
    inv_ctr = inventory["spec"]["template"]["spec"]["containers"][0]
    api, inv = binary_settings()["order-api"].env, binary_settings()["inventory-svc"].env

    def value(ctr: dict, defaults: dict, name: str) -> int:
        return int(effective_env(r, ctr, name, defaults.get(name)) or 0)

    create = value(order_ctr, api, "ORDERFLOW_CREATE_TIMEOUT_MS")
    ack = value(order_ctr, api, "ORDERFLOW_KAFKA_ACK_TIMEOUT_MS")
    c.check(create > ack, f"order-api refuses to start: create timeout {create} ms must exceed the Kafka ack timeout {ack} ms")
    deadline = value(order_ctr, api, "ORDERFLOW_PAYMENT_DEADLINE_SECS")
    ttl = value(inv_ctr, inv, "ORDERFLOW_RESERVATION_TTL_SECS")
    c.check(deadline < ttl, f"order-api's payment deadline {deadline} s must stay below inventory-svc's reservation TTL {ttl} s")


def check_env_check_bites(c: Checker, helm_bin: str) -> None:
    """check_env_is_read really fails on drift: a made-up variable, one of another binary (in each
    migration Job, whose three binaries do not read it), a bad flag, a misspelt OTEL_ one."""
    c.scenario = "env-drift-caught"
    r = render(helm_bin,
               "--set", "notifySvc.extraEnv[0].name=ORDERFLOW_NOT_A_SETTING", "--set-string", "notifySvc.extraEnv[0].value=1",
               "--set", "consumerWorker.extraEnv[0].name=ORDERFLOW_REDIS_TIMEOUT_MS", "--set-string", "consumerWorker.extraEnv[0].value=1",
               "--set", "migration.extraEnv[0].name=ORDERFLOW_WORKER_GROUP_ID", "--set-string", "migration.extraEnv[0].value=g",
               "--set", "inventorySvc.extraEnv[0].name=OTEL_SERVICE_NAM", "--set-string", "inventorySvc.extraEnv[0].value=x")
    r.get("ConfigMap", f"{PREFIX}-config")["data"]["ORDERFLOW_READ_BY_NOBODY"] = "1"
    r.kind("Job")[0]["spec"]["template"]["spec"]["containers"][0]["args"].append("--migrate-onyl")
    probe = Checker()
    check_env_is_read(probe, r)
    needles = ["sets ORDERFLOW_NOT_A_SETTING", "consumer-worker container consumer-worker: sets ORDERFLOW_REDIS_TIMEOUT_MS",
               *(f"Job/{job_name(schema)} container migrate: sets ORDERFLOW_WORKER_GROUP_ID" for schema in SCHEMAS),
               "ORDERFLOW_READ_BY_NOBODY is read by none", "passes --migrate-onyl",
               "inventory-svc container inventory-svc: sets OTEL_SERVICE_NAM"]
    for needle in needles:
        c.check(any(needle in f for f in probe.failures), f"check_env_is_read does not catch: {needle}")
    c.check(len(probe.failures) == len(needles),
            f"check_env_is_read: want exactly the {len(needles)} failures of the 6 planted mistakes (one in each of the {len(SCHEMAS)} migration Jobs), got {probe.failures}")


def check_chart_mentions(c: Checker) -> None:
    """Every ORDERFLOW_* and OTEL_* name in the chart's files and docs/deployment.md is one some binary (or its SDK) reads."""
    c.scenario = "names-in-files"
    known = all_read_variables() | otel_variables()
    for path in sorted([p for p in CHART.rglob("*") if p.is_file()] + [DEPLOYMENT_DOC]):
        for name in sorted(set(re.findall(r"\b(?:ORDERFLOW|OTEL)_[A-Z0-9_*]+", path.read_text()))):
            if "*" not in name:
                c.check(name.rstrip("_") in known, f"{path}: mentions {name}, which no binary reads")


def check_schema_config_keys(c: Checker, defaults: Render) -> None:
    """values.schema.json's `config` accepts exactly the variables some binary reads, minus the refused ones."""
    c.scenario = "schema-config-keys"
    names = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]["propertyNames"]
    allowed, refused = set(names.get("enum", [])), set(names.get("not", {}).get("enum", []))
    known = all_read_variables()
    c.check(allowed == known - refused,
            f"values.schema.json config: lacks {sorted(known - refused - allowed)}, has unknown {sorted(allowed - (known - refused))}")
    c.check(refused <= known, f"values.schema.json config refuses names no binary reads: {sorted(refused - known)}")
    cm = defaults.get("ConfigMap", f"{PREFIX}-config") or {}
    own = set(cm.get("data") or {}) | {"ORDERFLOW_NOTIFY_WEBHOOK_URL"}
    c.check(own <= refused, f"values.schema.json config must refuse what the chart sets from its own values: {sorted(own - refused)}")


BAD_VALUES = [
    # (what, values file text, a piece of the expected error)
    ("replicas as a string", "orderApi:\n  replicas: two\n", "replicas"),
    ("unknown key", "orderApi:\n  replica: 3\n", "replica"),
    ("unknown top-level key", "postgres:\n  url: postgres://x@y/z\n", "postgres"),
    ("log format outside the enum", "log:\n  format: xml\n", "format"),
    ("a credential in the ConfigMap", "config:\n  ORDERFLOW_DATABASE_URL: postgres://u:p@h/d\n", "ORDERFLOW_DATABASE_URL"),
    ("a config key no binary reads", "config:\n  ORDERFLOW_CURENCY: USD\n", "ORDERFLOW_CURENCY"),
    ("a config key that has its own value", "config:\n  ORDERFLOW_WORKER_GROUP_ID: other\n", "ORDERFLOW_WORKER_GROUP_ID"),
    ("grace period below 30 s", "inventorySvc:\n  terminationGracePeriodSeconds: 5\n", "terminationGracePeriodSeconds"),
    ("preStop sleep eating the drain", "orderApi:\n  preStopSleepSeconds: 28\n", "preStopSleepSeconds"),
    ("brokers without a port", "kafka:\n  brokers: kafka\n", "brokers"),
    ("metrics on a gRPC port", "metrics:\n  port: 50051\n", "port"),
    ("a dashboard label value that is no string", "grafanaDashboard:\n  labels:\n    grafana_dashboard: 1\n", "grafana_dashboard"),
    ("a dashboard namespace that is no DNS label", "grafanaDashboard:\n  namespace: Monitoring\n", "namespace"),
    ("webhook without a signing key", "notifySvc:\n  webhook:\n    url: http://hooks:8080/x\n", "webhook"),
    ("no PostgreSQL URL nor existing Secret", "postgresql:\n  url: \"\"\n", "postgresql"),
    ("no default PostgreSQL URL while a schema has none of its own",
     "postgresql:\n  url: \"\"\n  schemas:\n    orders:\n      url: postgres://orders_owner@db/orderflow\n"
     "    inventory:\n      existingSecret: inventory-db\n", "postgresql"),
    ("an unknown schema", "postgresql:\n  schemas:\n    billing:\n      url: postgres://billing_owner@db/orderflow\n", "billing"),
    ("an unknown key in a schema", "postgresql:\n  schemas:\n    orders:\n      role: orders_owner\n", "role"),
    ("a schema URL that is no postgres:// URL", "postgresql:\n  schemas:\n    notify:\n      url: mysql://notify_owner@db/orderflow\n", "url"),
    ("a schema's Secret name that is no DNS name", "postgresql:\n  schemas:\n    inventory:\n      existingSecret: Inventory_DB\n", "existingSecret"),
    # Authentication.
    ("an environment outside the enum", "auth:\n  environment: staging\n", "environment"),
    ("authentication without a JWT key or static tokens", "auth:\n  enabled: true\n  inventoryToken:\n    existingSecret: t\n", "auth"),
    ("authentication without order-api's inventory token", "auth:\n  enabled: true\n  tokens:\n    existingSecret: t\n", "inventoryToken"),
    ("a JWT algorithm outside the enum", "auth:\n  jwt:\n    algorithm: PS256\n", "algorithm"),
    ("a Secret name that is no DNS name", "auth:\n  tokens:\n    existingSecret: Static_Tokens\n", "existingSecret"),
    ("a file setting in config", "config:\n  ORDERFLOW_AUTH_TOKENS_FILE: /tokens\n", "ORDERFLOW_AUTH_TOKENS_FILE"),
    # Traces.
    ("tracing without an endpoint", "tracing:\n  enabled: true\n", "otlpEndpoint"),
    ("an OTLP endpoint without a scheme", "tracing:\n  enabled: true\n  otlpEndpoint: otel:4317\n", "otlpEndpoint"),
    ("a sampler outside the enum", "tracing:\n  sampler: ratio\n", "sampler"),
    ("a sampler ratio above 1", "tracing:\n  samplerArg: 2\n", "samplerArg"),
    ("a resource attribute the chart sets", "tracing:\n  resourceAttributes:\n    k8s.pod.name: x\n", "k8s.pod.name"),
    # Dependency TLS and SASL.
    ("a password in kafka.properties", "kafka:\n  properties:\n    sasl.password: hunter2\n", "sasl.password"),
    ("a comma in a Kafka property", "kafka:\n  properties:\n    ssl.cipher.suites: A,B\n", "ssl.cipher.suites"),
    ("bootstrap.servers in kafka.properties", "kafka:\n  properties:\n    bootstrap.servers: k:9092\n", "bootstrap.servers"),
    ("SASL GSSAPI (not built into the image)", "kafka:\n  properties:\n    security.protocol: SASL_SSL\n    sasl.mechanism: GSSAPI\n",
     "sasl.mechanism"),
    ("a SASL password without SASL", "kafka:\n  sasl:\n    passwordSecret: kafka-password\n", "security.protocol"),
    ("a CA from a Secret and a ConfigMap at once", "redis:\n  tlsCa:\n    secret: a\n    configMap: b\n", "tlsCa"),
    ("KEDA without credentials for TLS brokers", "kafka:\n  properties:\n    security.protocol: SSL\nconsumerWorker:\n  keda:\n    enabled: true\n",
     "authenticationRef"),
]


# Values the schema cannot judge (or must not: its errors quote the value, and these are URLs
# with passwords) and the templates refuse with `fail`, naming what to do. `helm lint` only logs a
# template's `fail` (Helm 4's lint mode), so these are checked with `helm template` and with `helm
# install --dry-run`, what an install runs.
BAD_RENDERS = [
    ("production without authentication (the services would refuse to start)", "auth:\n  environment: production\n",
     "auth.environment is production but auth.enabled is false: the services refuse to start in production without authentication"),
    ("production with auth.enabled but no secrets, schema skipped",
     "auth:\n  environment: production\n  enabled: true\n", "auth.enabled: set auth.jwt.existingSecret"),
    ("a Redis CA without rediss://", "redis:\n  tlsCa:\n    secret: redis-ca\n", "redis.url is not rediss://"),
    ("a PostgreSQL CA the URL does not use", "postgresql:\n  tlsCa:\n    configMap: pg-ca\n", "sslrootcert=/etc/orderflow/postgresql/ca.pem"),
    ("a PostgreSQL CA a schema's URL does not use",
     "postgresql:\n  url: postgres://db/orderflow?sslmode=verify-full&sslrootcert=/etc/orderflow/postgresql/ca.pem\n  tlsCa:\n    secret: pg-ca\n"
     "  schemas:\n    notify:\n      url: postgres://notify_owner:Notify-Pw-1@db/orderflow\n",
     "sslrootcert=/etc/orderflow/postgresql/ca.pem to the query of postgresql.schemas.notify.url"),
    ("a schema with both a URL and an existing Secret",
     "postgresql:\n  schemas:\n    orders:\n      url: postgres://orders_owner:Orders-Pw-1@db/orderflow\n      existingSecret: orders-db\n",
     "postgresql.schemas.orders: set url or existingSecret, not both"),
    ("no default PostgreSQL URL for a schema without its own, schema skipped",
     "postgresql:\n  url: \"\"\n  schemas:\n    orders:\n      existingSecret: orders-db\n",
     "set postgresql.url or postgresql.existingSecret (or a url or existingSecret for every schema"),
]


def check_rejections(c: Checker, helm_bin: str) -> None:
    c.scenario = "schema-rejects"
    with tempfile.TemporaryDirectory() as tmp:
        for what, text, expected in BAD_VALUES:
            path = Path(tmp) / "bad-values.yaml"
            path.write_text(text)
            for command in (["lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART), "-f", str(path)],
                            ["template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "-f", str(path)]):
                out = helm(helm_bin, *command)
                ok = out.returncode != 0 and expected in (out.stdout + out.stderr)
                c.check(ok, f"helm {command[0]} accepted bad values ({what}) or failed for another reason:\n{out.stderr.strip()[:400]}")
    c.scenario = "render-fails"
    with tempfile.TemporaryDirectory() as tmp:
        for what, text, expected in BAD_RENDERS:
            path = Path(tmp) / "bad-values.yaml"
            path.write_text(text)
            skip = ["--skip-schema-validation"] if "schema skipped" in what else []
            for command in (["template", RELEASE, str(CHART), "--kube-version", KUBE_VERSION, "-f", str(path), *skip],
                            ["install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", "-f", str(path), *skip]):
                out = helm(helm_bin, *command)
                ok = out.returncode != 0 and "execution error" in out.stderr and expected in out.stderr
                c.check(ok, f"helm {command[0]} rendered bad values ({what}) or failed for another reason:\n{out.stderr.strip()[:400]}")
                c.check(not URL_WITH_PASSWORD.search(out.stderr), f"helm {command[0]} ({what}): the error shows a URL with its password")


def check_notes(c: Checker, helm_bin: str) -> None:
    c.scenario = "notes"
    out = helm(helm_bin, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client")
    if not c.check(out.returncode == 0, f"helm install --dry-run=client failed: {out.stderr.strip()[:400]}"):
        return
    notes = out.stdout.split("NOTES:", 1)[-1]
    for needle in (f"port-forward svc/{name_of('order-api')} 50051:50051",
                   "grpcurl -plaintext localhost:50051 list",
                   "orderflow.order.v1.OrderService/CreateOrder",
                   "grpc.health.v1.Health/Check",
                   f"helm test {RELEASE}",
                   f"{job_name('orders')}, -inventory and -notify"):
        c.check(needle in notes, f"NOTES.txt lacks {needle!r}")


def check_dockerfile(c: Checker, deployments: list[dict]) -> None:
    c.scenario = "dockerfile"
    text = DOCKERFILE.read_text()
    lines = [ln.strip() for ln in re.sub(r"\\\n", " ", text).splitlines() if ln.strip() and not ln.strip().startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    c.check(len(froms) >= 2, f"Dockerfile: want a multi-stage build, got {len(froms)} FROM")
    c.check(any("rust:1-bookworm" in ln for ln in lines), "Dockerfile: the builder is not rust:1-bookworm")
    c.check(not any(re.search(r":latest\b", ln) for ln in froms), "Dockerfile: a stage uses a :latest image")
    # rdkafka's "ssl" feature links the system's libssl3 (not vendored): the runtime image must ship
    # it and the CA certificates (distroless cc or base, not static or base-nossl).
    rdkafka = re.search(r"^rdkafka\s*=.*$", CARGO_TOML.read_text(), re.M)
    if rdkafka and re.search(r'"ssl"', rdkafka.group(0)):
        runtime = re.search(r"^ARG RUNTIME_IMAGE=(\S+)", text, re.M)
        c.check(bool(runtime) and re.match(r"gcr\.io/distroless/(cc|base)-debian\d+", runtime.group(1)) is not None,
                f"Dockerfile: RUNTIME_IMAGE {runtime.group(1) if runtime else None} must carry libssl3 (rdkafka links the system OpenSSL)")
    last_stage = text[text.rfind("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", last_stage, re.M)
    c.check(bool(users) and users[-1].split(":")[0] not in ("0", "root"), f"Dockerfile: the final stage must end as a non-root USER, got {users}")
    c.check(bool(users) and users[-1].split(":")[0] == "65532", "Dockerfile: the final USER must be 65532 (the chart's runAsUser)")
    build = next((ln for ln in lines if "cargo build" in ln), "")
    c.check("--release" in build and "--locked" in build, "Dockerfile: cargo build must be --release --locked")
    binaries = sorted(COMPONENTS)
    for binary in binaries:
        c.check(f"-p {binary}" in build, f"Dockerfile: cargo build lacks -p {binary}")
    c.check(build.count("--mount=type=cache") >= 2, "Dockerfile: the cargo registry and target dir should be BuildKit cache mounts")
    copy = next((ln for ln in lines if ln.startswith("COPY --from=builder")), "")
    c.check(copy.rstrip().endswith("/usr/local/bin/"), "Dockerfile: binaries must go to /usr/local/bin/")
    for binary in binaries:
        c.check(f"/{binary}" in copy, f"Dockerfile: {binary} is not copied into the runtime stage")
    commands = {d["spec"]["template"]["spec"]["containers"][0]["command"][0] for d in deployments}
    c.check(commands == {f"/usr/local/bin/{b}" for b in binaries}, f"chart commands {sorted(commands)} do not match the image's binaries")
    ignore = {ln.strip().rstrip("/") for ln in DOCKERIGNORE.read_text().splitlines() if ln.strip() and not ln.startswith("#")}
    for entry in ("target", ".git"):
        c.check(entry in ignore, f"Dockerfile.dockerignore must exclude {entry}/")
    for needed in ("proto", "runtime", "Cargo.lock", "tests"):
        c.check(needed not in ignore, f"Dockerfile.dockerignore excludes {needed}, which the build needs")


def main() -> int:
    global CHART, ALL_FEATURES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", default="helm", help="the helm binary")
    parser.add_argument("--chart", type=Path, default=CHART, help="the chart directory (default: deploy/helm/orderflow)")
    args = parser.parse_args()
    CHART = args.chart.resolve()
    ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"

    c = Checker()
    check_sources(c)
    dashboard = check_dashboard_file(c)
    if dashboard is not None:
        check_dashboard_check_bites(c, dashboard)
    defaults = render(args.helm)
    check_defaults(c, defaults)
    check_all_features(c, render(args.helm, "-f", str(ALL_FEATURES)))
    check_existing_secrets(c, args.helm)
    check_schema_variants(c, args.helm)
    check_feature_variants(c, args.helm)
    check_variants(c, args.helm)
    check_env_check_bites(c, args.helm)
    check_chart_mentions(c)
    check_schema_config_keys(c, defaults)
    check_rejections(c, args.helm)
    check_notes(c, args.helm)
    check_dockerfile(c, defaults.kind("Deployment"))

    for failure in c.failures:
        print(f"FAIL {failure}", file=sys.stderr)
    print(f"chart checks: {c.passed} passed, {len(c.failures)} failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())

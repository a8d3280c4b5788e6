#!/usr/bin/env python3
"""Starts each binary with the configuration the Helm chart gives it, in check mode.

check_chart.py proves, from the Rust sources, that every variable and flag the chart sets is one
its binary *reads*. That says nothing of whether the binary *accepts* the value: a librdkafka
property it refuses, a log filter it cannot parse, a key file that is no PEM, a path that names no
mounted file. Only the binary can tell, so this runs it: for several value sets (the defaults,
ci/all-features-values.yaml and the scenarios check_chart.py renders), every container of every
Deployment and of the three migration Jobs (one per PostgreSQL schema) is started as

    <target>/debug/<basename of command[0]> <the container's args> --check-config

In check mode a binary parses its whole configuration (flags and environment, exactly as it would
start), reads and parses every file it names (PEM certificates and keys, the JWT key, the static
tokens file, URLs, librdkafka properties, the log filter), connects to nothing, prints
`<binary>: configuration OK` and exits 0; on a bad configuration it names the reason on stderr
and exits non-zero (2 for what clap refuses, e.g. an unknown flag).

What the container would see is rebuilt without a cluster:
  - environment: a clean one (PATH, HOME and LANG only: nothing of the caller's ORDERFLOW_*, OTEL_*
    or RUST_* may help or hurt), then the container's envFrom and env in Kubernetes order (later
    entries win; `$(VAR)` expands variables defined before it, `$$` is a `$`; the downward API gets
    plausible pod values); values from a Secret or ConfigMap the render holds are its own;
  - files: every file mounted from a Secret, ConfigMap or projected volume (items, subPath) is
    written under a fresh directory standing in for the container's root, and every mention of a
    mount path in env values, args and those files' contents (ssl.ca.location, the database URL's
    sslrootcert, *_FILE) is rewritten to point there;
  - addresses (PostgreSQL, Redis, Kafka, the OTLP collector, inventory-svc) are passed verbatim:
    check mode resolves and connects to nothing, so the rendered value itself is what is checked.
    A run that hangs (20 s) fails: it probably tried to connect.
Secrets and ConfigMaps the chart only names (existingSecret, tlsCa, …) get test fixtures, real
material made once per run with openssl: a self-signed CA certificate for a CA key, an EC P-256
or RSA public key for an ES256 or RS256 JWT key, random text for an HS256 one, a static tokens
file as grpc/src/auth.rs parses it, URLs for the database (one per Secret entry, naming it, so
that two Secrets never look alike) and Redis URLs, plain text for passwords, tokens and anything
unrecognised (-v lists every fixture and what it stood in for).

Before a binary starts, its wiring is checked against the values of the run: a Deployment runs its
component's binary without --migrate-only, a migration Job runs its schema's binary (order-api,
inventory-svc, notify-svc) with --migrate-only, and the file ORDERFLOW_DATABASE_URL_FILE names
holds the URL of the workload's own schema (postgresql.schemas.<schema>, else the default), as
written there or as the fixture of the Secret entry the values name. A miss fails the run.

So that a harness that cannot fail does not pass, the all-features order-api container is also
run with four mutations that must be refused ("expected refusal"): by its binary, a Kafka
property without `=`, an unknown flag (exit 2), a JWT key file that is no PEM; by the wiring
check, a database URL file holding another schema's URL.

Usage: check_binaries.py --helm PATH --chart PATH --target-dir PATH [-v]
(scripts/check-chart.sh runs it after `cargo build --workspace --bins`). Prints one line per run
and `binaries: N passed, M failed`; exits 1 when any run failed.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import yaml

# check_chart.py is a script, not a package: import it from its directory, for its render helpers,
# without leaving a __pycache__ in the source tree.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True
import check_chart as chart  # noqa: E402

RUN_TIMEOUT_SECS = 20
# The only caller variables a binary gets: what any process needs, none that configures orderflow.
PASSED_THROUGH = ("PATH", "HOME", "LANG")
# The downward API's fields, as a pod of the workload would see them ({component}: its label).
FIELD_VALUES = {
    "metadata.namespace": chart.NAMESPACE,
    "metadata.name": "{component}-abc12",
    "spec.nodeName": "node-1",
    "status.podIP": "10.0.0.7",
}
JWT_ALGORITHM_VARIABLE = "ORDERFLOW_AUTH_JWT_ALGORITHM"
REDIS_CA_VARIABLE = "ORDERFLOW_REDIS_TLS_CA_FILE"
# A Kubernetes `$(VAR)` reference, or `$$` (a literal `$`).
KUBE_REFERENCE = re.compile(r"\$(\$|\(([^)]*)\))")

# (kind, name, key) of a Secret or ConfigMap entry: kind is "secret" or "configMap".
Source = tuple[str, str, str]


class HarnessError(Exception):
    """The container asks for something this harness cannot stand in for (the run fails)."""


@dataclass(frozen=True)
class ValueSet:
    name: str
    override: dict            # merged over values.yaml, as a values file
    release: str = chart.RELEASE


def value_sets() -> list[ValueSet]:
    """The value sets check_chart.py renders, under its scenario names (left out: env-drift-caught,
    a render broken on purpose, and the schema-rejects / render-fails values, which do not
    render)."""
    return [
        ValueSet("defaults", {}),
        ValueSet("all-features", yaml.safe_load(chart.ALL_FEATURES.read_text())),
        *(ValueSet(name, override) for name, override in chart.SCENARIO_VALUES.items()),
        ValueSet("release-name", {}, release="orderflow-prod"),
        # rollout-on-change's three renders besides the defaults.
        ValueSet("other-brokers", {"kafka": {"brokers": "other:9092"}}),
        ValueSet("other-database", {"postgresql": {"url": "postgres://u:p@elsewhere:5432/db"}}),
        ValueSet("other-schema-url", {"postgresql": {"schemas": {"notify": {"url": "postgres://notify_owner:p@elsewhere:5432/db"}}}}),
    ]


# --- Fixtures: material for what the render only names -------------------------------------------
# The static tokens file (grpc/src/auth.rs parse_tokens: `<token> <subject> <scope>[,<scope>…]`),
# listing the inventory token fixture so that the two agree as they would in a real cluster.
INVENTORY_TOKEN = "test-inventory-token"
STATIC_TOKENS = f"""\
# check_binaries.py fixture: <token> <subject> <scope>[,<scope>…]
{INVENTORY_TOKEN} order-api inventory
test-buyer-token user-1 orders
test-operator-token operator admin
"""


def openssl(*args: str) -> None:
    out = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"check_binaries: openssl {' '.join(args)} failed:\n{out.stderr}")


class Fixtures:
    """Test material, made once per run, picked for a Secret or ConfigMap entry by its key and use."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("openssl") is None:
            raise SystemExit("check_binaries: openssl is needed to make the certificate and key fixtures")
        directory.mkdir()
        ca_key, ca, ec_key, ec, rsa_key, rsa = (directory / n for n in (
            "ca.key", "ca.pem", "ec.key", "ec-public.pem", "rsa.key", "rsa-public.pem"))
        # Extensions of a real CA: rustls (Redis, the OTLP exporter) refuses a root without them.
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(ca_key), "-out", str(ca), "-days", "2", "-subj", "/CN=orderflow check_binaries CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(ec_key))
        openssl("pkey", "-in", str(ec_key), "-pubout", "-out", str(ec))
        openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(rsa_key))
        openssl("pkey", "-in", str(rsa_key), "-pubout", "-out", str(rsa))
        self.ca_certificate = ca.read_bytes()
        self.jwt_public_keys = {"ES256": (ec.read_bytes(), "EC P-256 public key PEM (ES256)"),
                                "RS256": (rsa.read_bytes(), "RSA public key PEM (RS256)")}
        self._random: dict[Source, bytes] = {}

    @staticmethod
    def database_url(source: Source) -> bytes:
        """The database URL standing in for an existing Secret's entry: its user names the entry, so
        that the URL of one schema's Secret is told from another's (a role per schema)."""
        return f"postgres://fixture-{source[1]}-{source[2]}:test-password@postgresql:5432/orderflow".encode()

    def random_text(self, source: Source) -> bytes:
        """Random text, the same for one entry throughout the run (as one Secret would be)."""
        return self._random.setdefault(source, f"test-{secrets.token_hex(16)}".encode())

    def pick(self, source: Source, use: str, env: dict[str, str], jwt_default: str) -> tuple[bytes, str]:
        """The fixture for `source`, by its key and `use` (the env variable, the file path and
        the variables naming it): its content and what it is (for -v)."""
        hints = f"{source[2]} {use}".lower()
        if "jwt" in hints:
            algorithm = env.get(JWT_ALGORITHM_VARIABLE, jwt_default).upper()
            if algorithm in self.jwt_public_keys:
                return self.jwt_public_keys[algorithm]
            return self.random_text(source), f"random text ({algorithm} shared secret)"
        if re.search(r"(?<![a-z])ca(?![a-z])|sslrootcert|ca-bundle", hints):
            return self.ca_certificate, "self-signed CA certificate PEM"
        if re.search(r"auth_tokens|(?<![\w-])tokens(?![\w-])", hints):
            return STATIC_TOKENS.encode(), "static tokens file"
        if re.search(r"inventory[_-]token", hints):
            return INVENTORY_TOKEN.encode(), "plain text (the inventory token of the static tokens file)"
        if "url" in hints and re.search(r"database|postgres", hints):
            return self.database_url(source), "postgres:// URL (its user names the Secret entry)"
        if "url" in hints and "redis" in hints:
            # A Redis CA is used only with TLS: a binary may well refuse it with redis://.
            if REDIS_CA_VARIABLE in env:
                return b"rediss://:test-password@redis:6380", "rediss:// URL (a Redis CA is set)"
            return b"redis://:test-password@redis:6379", "redis:// URL"
        if "otlp" in hints and "header" in hints:
            return b"authorization=Bearer test", "OTLP headers"
        if re.search(r"password|token|secret", hints):
            return self.random_text(source), "plain text"
        return self.random_text(source), "plain text (unknown key)"


# --- The container's view, rebuilt -----------------------------------------------------------------
def object_data(r: chart.Render, kind: str, name: str) -> dict[str, bytes] | None:
    """A rendered Secret's or ConfigMap's entries as bytes (None: the render holds no such object)."""
    obj = r.get("Secret" if kind == "secret" else "ConfigMap", name)
    if obj is None:
        return None
    encoded, plain = ("data", "stringData") if kind == "secret" else ("binaryData", "data")
    entries = {key: base64.b64decode(value) for key, value in (obj.get(encoded) or {}).items()}
    # A Secret's stringData wins over its data, as the API server merges them.
    entries.update({key: str(value).encode() for key, value in (obj.get(plain) or {}).items()})
    return entries


def rendered_entry(r: chart.Render, source: Source) -> bytes | None:
    """An entry of a rendered object; None when the render lacks the object (it exists elsewhere)."""
    data = object_data(r, source[0], source[1])
    if data is None:
        return None
    if source[2] not in data:
        # The kubelet would not start the pod: a chart bug, not something to stand in for.
        raise HarnessError(f"{source[0]} {source[1]} has no key {source[2]!r}")
    return data[source[2]]


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: only variables defined before; unknown ones stay literal."""
    def one(m: re.Match) -> str:
        if m.group(1) == "$":
            return "$"
        return defined.get(m.group(2), m.group(0))
    return KUBE_REFERENCE.sub(one, value)


def field_value(path: str, component: str) -> str:
    if path not in FIELD_VALUES:
        raise HarnessError(f"fieldRef {path} has no stand-in value")
    return FIELD_VALUES[path].format(component=component)


def container_env(r: chart.Render, ctr: dict, component: str, fixtures: Fixtures, jwt_default: str,
                  notes: list[str]) -> dict[str, str]:
    """The variables the container defines, in Kubernetes order: envFrom, then env; later ones win.
    Appends to `notes` what stood in for what."""
    env: dict[str, str] = {}
    for source in ctr.get("envFrom", []):
        kind = "configMap" if "configMapRef" in source else "secret"
        name = source.get("configMapRef", source.get("secretRef", {}))["name"]
        data = object_data(r, kind, name)
        if data is None:
            raise HarnessError(f"envFrom {kind} {name} is not in the render (no fixture can stand in for a whole object)")
        env.update({source.get("prefix", "") + key: value.decode() for key, value in data.items()})
    for e in ctr.get("env", []):
        name, value_from = e["name"], e.get("valueFrom") or {}
        if "valueFrom" not in e:
            env[name] = expand(e.get("value", ""), env)
        elif "fieldRef" in value_from:
            env[name] = field_value(value_from["fieldRef"]["fieldPath"], component)
        elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
            kind = "secret" if "secretKeyRef" in value_from else "configMap"
            ref = value_from[f"{kind}KeyRef"]
            source = (kind, ref["name"], ref["key"])
            content = rendered_entry(r, source)
            if content is None:
                content, what = fixtures.pick(source, name, env, jwt_default)
                notes.append(f"env {name} <- {kind} {source[1]} key {source[2]}: fixture, {what}")
            env[name] = content.decode()
        else:
            raise HarnessError(f"env {name}: valueFrom {sorted(value_from)} has no stand-in")
    return env


def container_files(pod: dict, ctr: dict, r: chart.Render) -> dict[str, Source]:
    """Each file the container sees from a Secret, ConfigMap or projected volume: path → source."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    files: dict[str, Source] = {}
    for mount in ctr.get("volumeMounts", []):
        for path, source in chart.volume_files(volumes.get(mount["name"], {})):
            # A volume without items holds every key of its object.
            if path == "*":
                data = object_data(r, source[0], source[1])
                if data is None:
                    raise HarnessError(f"{source[0]} {source[1]} is mounted whole but not in the render: its keys are unknown")
                entries = [(key, (source[0], source[1], key)) for key in data]
            else:
                entries = [(path, source)]
            for entry_path, entry_source in entries:
                target = mounted_path(mount, entry_path)
                if target is not None:
                    files[target] = entry_source
    return files


def mounted_path(mount: dict, path: str) -> str | None:
    """Where a volume's file `path` appears in the container (None: outside the mount's subPath)."""
    sub = mount.get("subPath", "").strip("/")
    if not sub:
        return f"{mount['mountPath'].rstrip('/')}/{path}"
    if path == sub:
        return mount["mountPath"]
    if path.startswith(sub + "/"):
        return mount["mountPath"].rstrip("/") + path[len(sub):]
    return None


def file_mount_paths(pod: dict, ctr: dict) -> list[str]:
    """The mount paths of the container's Secret, ConfigMap and projected volumes (not emptyDirs)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    return [m["mountPath"].rstrip("/") for m in ctr.get("volumeMounts", [])
            if any(k in volumes.get(m["name"], {}) for k in chart.FILE_VOLUME_KINDS)]


def rewriter(mount_paths: list[str], root: Path) -> Callable[[str], str]:
    """Rewrites every mention of a mount path to the same path under `root`, in one pass (so a
    rewritten path is not rewritten again), whole path elements only (not …/kafka inside …/kafka2)."""
    if not mount_paths:
        return lambda text: text
    alternatives = "|".join(re.escape(p) for p in sorted(set(mount_paths), key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w.-])(?:{alternatives})(?![\w.-])")
    return lambda text: pattern.sub(lambda m: str(root) + m.group(0), text)


def references(path: str, env: dict[str, str], args: list[str], texts: dict[str, str]) -> list[tuple[str, str]]:
    """What names the file at `path`, as (what -v shows, a hint for the fixture choice): a variable
    or an arg, with the `key=` the path follows (ssl.ca.location=…); in another mounted file, only
    that key is a hint (sslrootcert=…): the other file's own path says nothing of this one."""
    pattern = re.compile(rf"(?:([\w.-]+)=)?(?<![\w.-]){re.escape(path)}(?![\w.-])")
    found = []
    for where, text in [*env.items(), *(("args", a) for a in args)]:
        for m in pattern.finditer(text):
            named = f"{where} {m.group(1)}" if m.group(1) else where
            found.append((named, named))
    for other, text in texts.items():
        for m in pattern.finditer(text) if other != path else []:
            found.append((f"{m.group(1) or 'a mention'} in {other}", m.group(1) or ""))
    return found


@dataclass
class Invocation:
    """One binary start: what to run, with which environment, over which stand-in root."""
    value_set: str
    workload: str             # Kind/name
    container: str
    binary: Path
    args: list[str]
    env: dict[str, str]
    root: Path
    files: dict[str, Path]    # container path → the file standing in for it
    notes: list[str]          # what stood in for what (printed with -v)
    after_check: tuple[str, ...] = ()    # args after --check-config (a negative control's)
    refusal: Refusal | None = None
    wiring: tuple[str, ...] = ()          # what the workload runs wrongly (binary, args), found by prepare
    expected: tuple[Expectation, ...] = ()  # files that must hold given content when the binary starts


@dataclass(frozen=True)
class Expectation:
    """A file the container must see with this content (as written under the root)."""
    path: str                 # the container's path
    content: str
    what: str                 # for messages: whose content it must be


@dataclass(frozen=True)
class Refusal:
    """A negative control: the binary must refuse, naming one of `mentions` on stderr (or, with
    harness=True, the wiring check must, naming one of them, before the binary starts)."""
    what: str
    mentions: tuple[str, ...]
    exit_code: int | None = None      # the exact code, when one is promised (clap: 2)
    harness: bool = False


def binary_path(target_dir: Path, ctr: dict) -> Path:
    if not ctr.get("command"):
        raise HarnessError("no command: the image's entrypoint is unknown here")
    return target_dir / "debug" / Path(ctr["command"][0]).name


def jwt_algorithm_default(binary: str) -> str:
    """The binary's default --auth-jwt-algorithm, read from its clap settings by check_chart."""
    settings = chart.binary_settings().get(binary)
    return (settings.env.get(JWT_ALGORITHM_VARIABLE) if settings else None) or "RS256"


def chart_prefix(r: chart.Render) -> str:
    """The render's resource prefix, from its ConfigMap <prefix>-config."""
    names = [cm["metadata"]["name"] for cm in r.kind("ConfigMap")
             if (cm["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "config"]
    if len(names) != 1 or not names[0].endswith("-config"):
        raise HarnessError(f"cannot tell the resource prefix from the ConfigMaps {names}")
    return names[0].removesuffix("-config")


def wiring(values: dict, r: chart.Render, workload: dict, ctr: dict, env: dict[str, str],
           fixtures: Fixtures) -> tuple[list[str], list[Expectation]]:
    """What the workload must run and read under `values`: problems with its binary and args, and
    the database URL its file must hold (its schema's, see check_chart.schema_database)."""
    prefix = chart_prefix(r)
    name, binary = workload["metadata"]["name"], Path((ctr.get("command") or ["?"])[0]).name
    args = ctr.get("args") or []
    problems = []
    if workload["kind"] == "Job":
        schema = next((s for s in chart.SCHEMAS if chart.job_name(s, prefix) == name), None)
        if schema is None:
            return [f"Job {name} is none of the migration Jobs {[chart.job_name(s, prefix) for s in chart.SCHEMAS]}"], []
        migrator = chart.SCHEMAS[schema][0]
        if binary != migrator or "--migrate-only" not in args:
            problems.append(f"runs {binary} {' '.join(args)}, want {migrator} --migrate-only (the {schema} schema's owner)")
    else:
        component = (workload["spec"]["template"]["metadata"].get("labels") or {}).get("app.kubernetes.io/component", "")
        schema = chart.COMPONENT_SCHEMA.get(component)
        if schema is None:
            return [f"Deployment {name}: component {component!r} is none of the four services"], []
        if binary != component or "--migrate-only" in args:
            problems.append(f"runs {binary} {' '.join(args)}, want {component} serving (no --migrate-only)")
    source, url = chart.schema_database(values, schema, prefix)
    if url is not None:
        content, what = url, f"the {schema} schema's URL from the values"
    else:
        content, what = fixtures.database_url(source).decode(), f"the {schema} schema's URL from Secret {source[1]} key {source[2]}"
    path = env.get("ORDERFLOW_DATABASE_URL_FILE")
    if not path:
        problems.append("no ORDERFLOW_DATABASE_URL_FILE")
        return problems, []
    return problems, [Expectation(path, content, what)]


def prepare(value_set: str, r: chart.Render, values: dict, workload: dict, ctr: dict, target_dir: Path, root: Path,
            fixtures: Fixtures) -> Invocation:
    """Writes the container's files under `root` (a new directory) and works out its args and environment,
    and what its wiring must be under `values` (the merged values of the render)."""
    pod = workload["spec"]["template"]["spec"]
    labels = workload["spec"]["template"]["metadata"].get("labels") or {}
    component = labels.get("app.kubernetes.io/component", ctr["name"])
    binary = binary_path(target_dir, ctr)
    notes: list[str] = []
    jwt_default = jwt_algorithm_default(binary.name)
    env = container_env(r, ctr, component, fixtures, jwt_default, notes)
    args = list(ctr.get("args", []))

    sources = container_files(pod, ctr, r)
    rendered = {path: rendered_entry(r, source) for path, source in sources.items()}
    # Latin-1 maps bytes to text one to one: paths are found in any content, nothing is lost.
    texts = {path: content.decode("latin-1") for path, content in rendered.items() if content is not None}
    for path, source in sources.items():
        kind, name, key = source
        refs = references(path, env, args, texts)
        named_by = f"named by {', '.join(shown for shown, _ in refs) or 'nothing'}"
        if path not in texts:
            content, what = fixtures.pick(source, " ".join([path, *(hint for _, hint in refs)]), env, jwt_default)
            texts[path] = content.decode("latin-1")
            notes.append(f"file {path} <- {kind} {name} key {key}: fixture, {what} ({named_by})")
        else:
            notes.append(f"file {path} <- {kind} {name} key {key}: rendered ({named_by})")

    rewrite = rewriter(file_mount_paths(pod, ctr), root)
    files: dict[str, Path] = {}
    for path, text in texts.items():
        host = root / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(rewrite(text).encode("latin-1"))
        files[path] = host
    clean = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    problems, expected = wiring(values, r, workload, ctr, env, fixtures)
    return Invocation(value_set, f"{workload['kind']}/{workload['metadata']['name']}", ctr["name"], binary,
                      [rewrite(a) for a in args], {**clean, **{k: rewrite(v) for k, v in env.items()}}, root, files, notes,
                      wiring=tuple(problems), expected=tuple(replace(e, content=rewrite(e.content)) for e in expected))


# --- Running ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str               # why it failed, or which refusal it was
    output: str               # stdout and stderr, for -v


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "(nothing on stderr)")


def wiring_problems(inv: Invocation) -> list[str]:
    """The workload's wiring problems, and each expected file that does not hold its content now."""
    problems = list(inv.wiring)
    for e in inv.expected:
        host = inv.files.get(e.path)
        if host is None:
            problems.append(f"{e.path} is no mounted file, want {e.what}")
        elif host.read_bytes().decode("latin-1") != e.content:
            problems.append(f"database URL file {e.path} does not hold {e.what}")
    return problems


def execute(inv: Invocation) -> Outcome:
    argv = [str(inv.binary), *inv.args, "--check-config", *inv.after_check]
    command = f"$ {' '.join(argv)}"
    problems = wiring_problems(inv)
    if inv.refusal is not None and inv.refusal.harness:
        if not problems:
            return Outcome(False, f"{inv.refusal.what}: the wiring check found nothing, want a refusal", command)
        if not any(m in p for p in problems for m in inv.refusal.mentions):
            return Outcome(False, f"{inv.refusal.what}: the wiring check names none of {list(inv.refusal.mentions)}: {problems[0]}", command)
        return Outcome(True, f"(expected refusal: {inv.refusal.what})", "\n".join(problems))
    if problems:
        return Outcome(False, f"wiring: {'; '.join(problems)}", command)
    try:
        out = subprocess.run(argv, env=inv.env, cwd=inv.root, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_SECS, check=False)
    except subprocess.TimeoutExpired:
        return Outcome(False, f"no answer within {RUN_TIMEOUT_SECS} s: did it try to connect? (check mode must connect to nothing)", command)
    except OSError as error:
        return Outcome(False, f"cannot start {inv.binary}: {error}", command)
    output = f"{command}\nexit {out.returncode}\n--- stdout\n{out.stdout}--- stderr\n{out.stderr}"
    if inv.refusal is not None:
        return judge_refusal(inv.refusal, out, output)
    if out.returncode != 0:
        return Outcome(False, f"exit {out.returncode}: {first_line(out.stderr)}", output)
    ok_line = f"{inv.binary.name}: configuration OK"
    if ok_line not in out.stdout.splitlines():
        return Outcome(False, f"exit 0 without printing '{ok_line}'", output)
    return Outcome(True, "", output)


def judge_refusal(refusal: Refusal, out: subprocess.CompletedProcess, output: str) -> Outcome:
    if out.returncode == 0:
        return Outcome(False, f"{refusal.what}: accepted (exit 0), want a refusal", output)
    if refusal.exit_code is not None and out.returncode != refusal.exit_code:
        return Outcome(False, f"{refusal.what}: exit {out.returncode}, want {refusal.exit_code}: {first_line(out.stderr)}", output)
    if not any(m in out.stderr for m in refusal.mentions):
        return Outcome(False, f"{refusal.what}: stderr names none of {list(refusal.mentions)}: {first_line(out.stderr)}", output)
    return Outcome(True, f"(expected refusal: {refusal.what})", output)


# --- Negative controls -----------------------------------------------------------------------------
# Run on the all-features order-api Deployment: the container with the most settings and files.
CONTROL_VALUE_SET = "all-features"
CONTROL_BINARY = "order-api"


def bad_kafka_property(inv: Invocation) -> Invocation:
    properties = inv.env.get("ORDERFLOW_KAFKA_PROPERTIES", "")
    env = {**inv.env, "ORDERFLOW_KAFKA_PROPERTIES": f"{properties},acks" if properties else "acks"}
    return replace(inv, env=env, refusal=Refusal("Kafka property 'acks' without '='", ("--kafka-property",)))


def unknown_flag(inv: Invocation) -> Invocation:
    # After --check-config: a binary without check mode is then refused for --check-config, the
    # first unknown flag, and this control fails instead of passing for the wrong reason.
    return replace(inv, after_check=("--no-such-flag",), refusal=Refusal("unknown flag --no-such-flag", ("--no-such-flag",), 2))


def not_a_pem(inv: Invocation) -> Invocation:
    """The JWT key file (or, without one, PostgreSQL's CA) overwritten with `not a pem`."""
    jwt = inv.env.get("ORDERFLOW_AUTH_JWT_KEY_FILE")
    if jwt:
        path, mentions = Path(jwt), ("--auth-jwt-key-file", "ORDERFLOW_AUTH_JWT_KEY_FILE", jwt)
    else:
        path = next((f for p, f in inv.files.items() if p.startswith("/etc/orderflow/postgresql/") and p.endswith("ca.pem")), None)
        if path is None:
            raise HarnessError("neither a JWT key file nor a PostgreSQL CA file to corrupt")
        mentions = ("sslrootcert", str(path))
    path.write_text("not a pem")
    return replace(inv, refusal=Refusal(f"{path.name} is 'not a pem'", mentions))


def other_schema_url(inv: Invocation) -> Invocation:
    """The database URL file overwritten with the URL of another schema's role."""
    if not inv.expected:
        raise HarnessError("no database URL file to overwrite")
    path = inv.files[inv.expected[0].path]
    path.write_text("postgres://notify_owner:test-password@postgresql:5432/orderflow")
    return replace(inv, refusal=Refusal("the notify schema's URL in order-api's database URL file", ("database URL file",), harness=True))


NEGATIVE_CONTROLS: list[Callable[[Invocation], Invocation]] = [bad_kafka_property, unknown_flag, not_a_pem, other_schema_url]


# --- The runs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """A container of a rendered Deployment or Job."""
    value_set: str
    render: chart.Render
    values: dict              # the merged values the render used
    workload: dict
    container: dict

    @property
    def label(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}  {self.container['name']}"


def collect_targets(helm_bin: str, sets: list[ValueSet]) -> list[Target]:
    targets = []
    for vs in sets:
        r, values = chart.render_values(helm_bin, vs.override, release=vs.release)
        for workload in r.kind("Deployment") + r.kind("Job"):
            for ctr in workload["spec"]["template"]["spec"]["containers"]:
                targets.append(Target(vs.name, r, values, workload, ctr))
    return targets


def require_binaries(target_dir: Path, targets: list[Target]) -> None:
    """Stops before any run when a binary the containers run is not built."""
    needed = set()
    for t in targets:
        try:
            needed.add(binary_path(target_dir, t.container))
        except HarnessError:
            pass  # that run fails with the reason
    missing = sorted(str(p) for p in needed if not os.access(p, os.X_OK))
    if missing:
        raise SystemExit(f"check_binaries: not built: {', '.join(missing)}\n"
                         "Build them first with `cargo build --workspace --bins` (or point --target-dir at your target directory).")


class Report:
    """Prints one line per run (with -v, what stood in for what and the binary's output); counts."""

    def __init__(self, verbose: bool, width: int) -> None:
        self.verbose = verbose
        self.width = width
        self.passed = 0
        self.failed = 0

    def run(self, target: Target, build: Callable[[], Invocation]) -> None:
        notes: list[str] = []
        try:
            inv = build()
            notes = inv.notes
            outcome = execute(inv)
        except HarnessError as error:
            outcome = Outcome(False, f"harness: {error}", "")
        self.line(outcome.ok, target.value_set, target.label, outcome.detail)
        if self.verbose:
            for text in notes + outcome.output.splitlines():
                print(f"       {text}")

    def line(self, ok: bool, value_set: str, label: str, detail: str) -> None:
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'ok' if ok else 'FAIL':<4} {value_set:<{self.width}}  {label}{'  ' + detail if detail else ''}", flush=True)


def control_target(targets: list[Target]) -> Target | None:
    return next((t for t in targets if t.value_set == CONTROL_VALUE_SET and t.workload["kind"] == "Deployment"
                 and Path((t.container.get("command") or ["?"])[0]).name == CONTROL_BINARY), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", default="helm", help="the helm binary")
    parser.add_argument("--chart", type=Path, default=chart.CHART, help="the chart directory (default: deploy/helm/orderflow)")
    parser.add_argument("--target-dir", type=Path, default=Path(os.environ.get("CARGO_TARGET_DIR", chart.ROOT / "target")),
                        help="cargo's target directory, holding debug/<binary> (default: $CARGO_TARGET_DIR or target/)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the fixtures used and each binary's output")
    args = parser.parse_args()
    # check_chart's render helpers read the chart's location from its module globals.
    chart.CHART = args.chart.resolve()
    chart.ALL_FEATURES = chart.CHART / "ci" / "all-features-values.yaml"
    target_dir = args.target_dir.resolve()

    sets = value_sets()
    targets = collect_targets(args.helm, sets)
    require_binaries(target_dir, targets)
    report = Report(args.verbose, max(len(s.name) for s in sets))
    with tempfile.TemporaryDirectory(prefix="check-binaries-") as tmp:
        work = Path(tmp)
        fixtures = Fixtures(work / "fixtures")

        def start(t: Target) -> Invocation:
            # Each run gets a root of its own: a control's corrupted file must not leak into another.
            root = Path(tempfile.mkdtemp(prefix="root-", dir=work))
            return prepare(t.value_set, t.render, t.values, t.workload, t.container, target_dir, root, fixtures)

        for t in targets:
            report.run(t, lambda t=t: start(t))
        control = control_target(targets)
        if control is None:
            report.line(False, CONTROL_VALUE_SET, f"Deployment of {CONTROL_BINARY}", "not rendered: no negative controls ran")
        else:
            for mutate in NEGATIVE_CONTROLS:
                report.run(control, lambda mutate=mutate: mutate(start(control)))
    print(f"binaries: {report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())

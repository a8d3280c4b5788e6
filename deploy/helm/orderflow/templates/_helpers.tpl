{{/*
Names, labels and the facts about the four services that every template shares.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "orderflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the prefix of every resource. <release>-<chart>, or the release name alone when
it already contains the chart name; fullnameOverride wins. Component names append "-<component>"
(at most 16 characters), so the prefix is cut at 46 to keep them within 63; only
"migration-inventory" is longer (19), so its Job and hook Secret lose their last characters behind
a prefix of more than 43.
*/}}
{{- define "orderflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of a component's resources: (dict "root" $ "component" "order-api"). */}}
{{- define "orderflow.componentName" -}}
{{- printf "%s-%s" (include "orderflow.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "orderflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource of a component: (dict "root" $ "component" "order-api"). */}}
{{- define "orderflow.labels" -}}
{{- $root := .root -}}
helm.sh/chart: {{ include "orderflow.chart" $root }}
{{ include "orderflow.selectorLabels" . }}
app.kubernetes.io/version: {{ include "orderflow.imageTag" $root | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: orderflow
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select a component's pods (immutable in a Deployment: never add to them). */}}
{{- define "orderflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orderflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels that select every pod of this release (all components). */}}
{{- define "orderflow.releaseSelectorLabels" -}}
app.kubernetes.io/name: {{ include "orderflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the services run as. */}}
{{- define "orderflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "orderflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image tag: image.tag, else the chart's appVersion. */}}
{{- define "orderflow.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/* The image reference: repository@digest or repository:tag. */}}
{{- define "orderflow.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "orderflow.imageTag" .) }}
{{- end }}
{{- end }}

{{/*
The four services: their values key, binary, gRPC port, listen variable, the gRPC service their
readiness probe checks, whether they have a Service (and so an HPA option), and what they talk to
(redis, kafka: whether the binary reads the Redis and Kafka settings; all four read PostgreSQL's,
the authentication settings and the telemetry settings), and the PostgreSQL schema it works in
(schema: its database URL is that schema's, see "orderflow.schemas").
Use: $components := include "orderflow.components" . | fromYaml
*/}}
{{- define "orderflow.components" -}}
order-api:
  values: orderApi
  binary: order-api
  port: 50051
  listenEnv: ORDERFLOW_ORDER_API_LISTEN
  grpcService: orderflow.order.v1.OrderService
  service: true
  redis: true
  kafka: true
  schema: orders
inventory-svc:
  values: inventorySvc
  binary: inventory-svc
  port: 50052
  listenEnv: ORDERFLOW_INVENTORY_LISTEN
  grpcService: orderflow.inventory.v1.InventoryService
  service: true
  redis: true
  kafka: true
  schema: inventory
notify-svc:
  values: notifySvc
  binary: notify-svc
  port: 50053
  listenEnv: ORDERFLOW_NOTIFY_LISTEN
  grpcService: orderflow.notify.v1.NotificationService
  service: true
  redis: false
  kafka: true
  schema: notify
consumer-worker:
  values: consumerWorker
  binary: consumer-worker
  port: 50054
  listenEnv: ORDERFLOW_WORKER_LISTEN
  grpcService: orderflow.consumer.v1.ConsumerStatusService
  service: false
  redis: false
  kafka: true
  schema: orders
{{- end }}

{{/*
The PostgreSQL schemas, each owned by one database role (postgresql.schemas.<schema>), and the
binary whose `--migrate-only` applies it, in the Job "<prefix>-migration-<schema>" (the services
that work in a schema name it as their `schema` above).
Use: $schemas := include "orderflow.schemas" . | fromYaml
*/}}
{{- define "orderflow.schemas" -}}
orders:
  migrator: order-api
inventory:
  migrator: inventory-svc
notify:
  migrator: notify-svc
{{- end }}

{{/* The five order event topics, before kafka.topicPrefix. */}}
{{- define "orderflow.eventTopics" -}}
- order-created
- order-paid
- order-cancelled
- order-shipped
- order-completed
{{- end }}

{{/*
Where a schema's database URL comes from (mounted for ORDERFLOW_DATABASE_URL_FILE), as YAML
{secret, key, url}: postgresql.schemas.<schema>.existingSecret; else its url, stored in the
chart's Secret under database-url-<schema>; else the default, postgresql.existingSecret or
postgresql.url (key database-url). url is the URL the chart stores (empty for an existing
Secret): the migration Jobs copy it into their hook Secrets.
Use: include "orderflow.databaseSource" (dict "root" $ "schema" "orders") | fromYaml
*/}}
{{- define "orderflow.databaseSource" -}}
{{- $pg := .root.Values.postgresql }}
{{- $s := index $pg.schemas .schema }}
{{- if $s.existingSecret }}
{{- toYaml (dict "secret" $s.existingSecret "key" $s.existingSecretKey "url" "") }}
{{- else if $s.url }}
{{- toYaml (dict "secret" (include "orderflow.fullname" .root) "key" (printf "database-url-%s" .schema) "url" $s.url) }}
{{- else if $pg.existingSecret }}
{{- toYaml (dict "secret" $pg.existingSecret "key" $pg.existingSecretKey "url" "") }}
{{- else }}
{{- toYaml (dict "secret" (include "orderflow.fullname" .root) "key" "database-url" "url" $pg.url) }}
{{- end }}
{{- end }}

{{/* Whether some schema falls back to postgresql.url / postgresql.existingSecret (has neither of its own). */}}
{{- define "orderflow.databaseDefaultUsed" -}}
{{- range $schema, $s := .Values.postgresql.schemas }}
{{- if and (not $s.url) (not $s.existingSecret) }}true{{ end }}
{{- end }}
{{- end }}

{{/* The PostgreSQL URLs the chart's Secret stores: key → URL (postgresql.url, the schemas' urls). */}}
{{- define "orderflow.storedDatabaseUrls" -}}
{{- $pg := .Values.postgresql }}
{{- $urls := dict }}
{{- if and (include "orderflow.databaseDefaultUsed" .) (not $pg.existingSecret) }}
{{- $_ := set $urls "database-url" $pg.url }}
{{- end }}
{{- range $schema, $s := $pg.schemas }}
{{- if and $s.url (not $s.existingSecret) }}
{{- $_ := set $urls (printf "database-url-%s" $schema) $s.url }}
{{- end }}
{{- end }}
{{- toYaml $urls }}
{{- end }}

{{/* The Secret holding the Redis URL (mounted for ORDERFLOW_REDIS_URL_FILE), and its key. */}}
{{- define "orderflow.redisSecretName" -}}
{{- default (include "orderflow.fullname" .) .Values.redis.existingSecret }}
{{- end }}
{{- define "orderflow.redisSecretKey" -}}
{{- ternary .Values.redis.existingSecretKey "redis-url" (ne .Values.redis.existingSecret "") }}
{{- end }}

{{/* notify-svc's webhook signing key: whether one is configured, its Secret and key. */}}
{{- define "orderflow.webhookSecretName" -}}
{{- default (include "orderflow.fullname" .) .Values.notifySvc.webhook.existingSecret }}
{{- end }}
{{- define "orderflow.webhookSecretKey" -}}
{{- ternary .Values.notifySvc.webhook.existingSecretKey "webhook-secret" (ne .Values.notifySvc.webhook.existingSecret "") }}
{{- end }}

{{/* Whether the chart creates its own Secret (some credential is not in an existing one). */}}
{{- define "orderflow.createSecret" -}}
{{- if or (include "orderflow.storedDatabaseUrls" . | fromYaml) (not .Values.redis.existingSecret) (and .Values.notifySvc.webhook.url .Values.notifySvc.webhook.secret (not .Values.notifySvc.webhook.existingSecret)) -}}
true
{{- end }}
{{- end }}

{{/* Whether a tlsCa value (secret/configMap/key) names a certificate. */}}
{{- define "orderflow.hasCa" -}}
{{- if or .secret .configMap }}true{{ end }}
{{- end }}

{{/* The librdkafka properties of ORDERFLOW_KAFKA_PROPERTIES (a dict), with ssl.ca.location for kafka.tlsCa. */}}
{{- define "orderflow.kafkaProperties" -}}
{{- $props := dict }}
{{- range $key, $value := .Values.kafka.properties }}
{{- $_ := set $props $key (include "orderflow.envString" $value) }}
{{- end }}
{{- if include "orderflow.hasCa" .Values.kafka.tlsCa }}
{{- $_ := set $props "ssl.ca.location" "/etc/orderflow/kafka/ca.pem" }}
{{- end }}
{{- toYaml $props }}
{{- end }}

{{/*
The files a container gets, by group: each group is one read-only projected volume
"<group>-files" mounted at /etc/orderflow/<group>, each entry one file <path> in it, from a Secret
(secret) or a ConfigMap (configMap) key, and the ORDERFLOW_*_FILE variable (env) pointing at it when
the binary takes its path from one (the CAs of PostgreSQL and Kafka are named by the URL's
sslrootcert and by ssl.ca.location instead). Groups with no file are left out. The database URL is
that of the service's schema ($c.schema, see "orderflow.databaseSource").
Use: include "orderflow.files" (dict "root" $ "component" "order-api" "c" $c) | fromYaml; a
migration Job passes "job" true and its "database" ({secret, key}: its schema's URL): it gets the
PostgreSQL group only.
*/}}
{{- define "orderflow.files" -}}
{{- $v := .root.Values }}
{{- $groups := dict }}
{{- $db := .database }}
{{- if not $db }}{{ $db = include "orderflow.databaseSource" (dict "root" .root "schema" .c.schema) | fromYaml }}{{ end }}
{{- $pg := list (dict "env" "ORDERFLOW_DATABASE_URL_FILE" "path" "url" "secret" $db.secret "key" $db.key) }}
{{- if include "orderflow.hasCa" $v.postgresql.tlsCa }}
{{- $pg = append $pg (dict "path" "ca.pem" "secret" $v.postgresql.tlsCa.secret "configMap" $v.postgresql.tlsCa.configMap "key" $v.postgresql.tlsCa.key) }}
{{- end }}
{{- $_ := set $groups "postgresql" $pg }}
{{- if not .job }}
{{- if .c.redis }}
{{- $redis := list (dict "env" "ORDERFLOW_REDIS_URL_FILE" "path" "url" "secret" (include "orderflow.redisSecretName" .root) "key" (include "orderflow.redisSecretKey" .root)) }}
{{- if include "orderflow.hasCa" $v.redis.tlsCa }}
{{- $redis = append $redis (dict "env" "ORDERFLOW_REDIS_TLS_CA_FILE" "path" "ca.pem" "secret" $v.redis.tlsCa.secret "configMap" $v.redis.tlsCa.configMap "key" $v.redis.tlsCa.key) }}
{{- end }}
{{- $_ := set $groups "redis" $redis }}
{{- end }}
{{- if .c.kafka }}
{{- $kafka := list }}
{{- if $v.kafka.sasl.passwordSecret }}
{{- $kafka = append $kafka (dict "env" "ORDERFLOW_KAFKA_SASL_PASSWORD_FILE" "path" "sasl-password" "secret" $v.kafka.sasl.passwordSecret "key" $v.kafka.sasl.passwordSecretKey) }}
{{- end }}
{{- if include "orderflow.hasCa" $v.kafka.tlsCa }}
{{- $kafka = append $kafka (dict "path" "ca.pem" "secret" $v.kafka.tlsCa.secret "configMap" $v.kafka.tlsCa.configMap "key" $v.kafka.tlsCa.key) }}
{{- end }}
{{- if $kafka }}{{ $_ := set $groups "kafka" $kafka }}{{ end }}
{{- end }}
{{- if $v.auth.enabled }}
{{- $auth := list }}
{{- if $v.auth.jwt.existingSecret }}
{{- $auth = append $auth (dict "env" "ORDERFLOW_AUTH_JWT_KEY_FILE" "path" "jwt-key" "secret" $v.auth.jwt.existingSecret "key" $v.auth.jwt.existingSecretKey) }}
{{- end }}
{{- if $v.auth.tokens.existingSecret }}
{{- $auth = append $auth (dict "env" "ORDERFLOW_AUTH_TOKENS_FILE" "path" "tokens" "secret" $v.auth.tokens.existingSecret "key" $v.auth.tokens.existingSecretKey) }}
{{- end }}
{{- if and (has .component (list "order-api" "consumer-worker")) $v.auth.inventoryToken.existingSecret }}
{{- $auth = append $auth (dict "env" "ORDERFLOW_INVENTORY_TOKEN_FILE" "path" "inventory-token" "secret" $v.auth.inventoryToken.existingSecret "key" $v.auth.inventoryToken.existingSecretKey) }}
{{- end }}
{{- $_ := set $groups "auth" $auth }}
{{- end }}
{{- if and (eq .component "notify-svc") $v.notifySvc.webhook.url }}
{{- $_ := set $groups "webhook" (list (dict "env" "ORDERFLOW_NOTIFY_WEBHOOK_SECRET_FILE" "path" "secret" "secret" (include "orderflow.webhookSecretName" .root) "key" (include "orderflow.webhookSecretKey" .root))) }}
{{- end }}
{{- end }}
{{- toYaml $groups }}
{{- end }}

{{/* The env entries pointing at the files of "orderflow.files" (a list). */}}
{{- define "orderflow.fileEnv" -}}
{{- $env := list }}
{{- range $group, $files := . }}
{{- range $files }}
{{- if .env }}{{ $env = append $env (dict "name" .env "value" (printf "/etc/orderflow/%s/%s" $group .path)) }}{{ end }}
{{- end }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* The volumeMounts of "orderflow.files": read-only, one directory per group. */}}
{{- define "orderflow.fileMounts" -}}
{{- range $group, $files := . }}
- name: {{ $group }}-files
  mountPath: /etc/orderflow/{{ $group }}
  readOnly: true
{{- end }}
{{- end }}

{{/*
The volumes of "orderflow.files": projected volumes of Secret and ConfigMap keys. Mode 0440: the
files belong to root and to the pod's fsGroup (65532, the group of the services' user), which
reads them; 0400 would leave them to root alone.
*/}}
{{- define "orderflow.fileVolumes" -}}
{{- range $group, $files := . }}
- name: {{ $group }}-files
  projected:
    defaultMode: 0440
    sources:
      {{- range $files }}
      {{- if .secret }}
      - secret:
          name: {{ .secret }}
          items:
            - key: {{ .key }}
              path: {{ .path }}
      {{- else }}
      - configMap:
          name: {{ .configMap }}
          items:
            - key: {{ .key }}
              path: {{ .path }}
      {{- end }}
      {{- end }}
{{- end }}
{{- end }}

{{/* Checks the values templates cannot express in the schema; fails the render with a reason. */}}
{{- define "orderflow.validate" -}}
{{- $w := .Values.notifySvc.webhook }}
{{- if and $w.url (not $w.secret) (not $w.existingSecret) }}
{{- fail "notifySvc.webhook.url is set: set notifySvc.webhook.secret or notifySvc.webhook.existingSecret too (deliveries are signed)" }}
{{- end }}
{{- $pg := .Values.postgresql }}
{{- range $schema, $s := $pg.schemas }}
{{- if and $s.url $s.existingSecret }}
{{- fail (printf "postgresql.schemas.%s: set url or existingSecret, not both" $schema) }}
{{- end }}
{{- end }}
{{- if and (include "orderflow.databaseDefaultUsed" .) (not $pg.existingSecret) (not $pg.url) }}
{{- fail "set postgresql.url or postgresql.existingSecret (or a url or existingSecret for every schema under postgresql.schemas)" }}
{{- end }}
{{- if and (not .Values.redis.existingSecret) (not .Values.redis.url) }}
{{- fail "set redis.url or redis.existingSecret" }}
{{- end }}
{{- $a := .Values.auth }}
{{- if and (eq $a.environment "production") (not $a.enabled) }}
{{- fail "auth.environment is production but auth.enabled is false: the services refuse to start in production without authentication (ORDERFLOW_ENVIRONMENT=production needs ORDERFLOW_AUTH_JWT_KEY_FILE or ORDERFLOW_AUTH_TOKENS_FILE). Set auth.enabled=true with auth.jwt.existingSecret and/or auth.tokens.existingSecret, and auth.inventoryToken.existingSecret" }}
{{- end }}
{{- if and $a.enabled (not $a.jwt.existingSecret) (not $a.tokens.existingSecret) }}
{{- fail "auth.enabled: set auth.jwt.existingSecret (a JWT verification key) and/or auth.tokens.existingSecret (static tokens)" }}
{{- end }}
{{- if and $a.enabled (not $a.inventoryToken.existingSecret) }}
{{- fail "auth.enabled: set auth.inventoryToken.existingSecret, the token (scope inventory) order-api and consumer-worker present to inventory-svc, which otherwise refuses their calls" }}
{{- end }}
{{- $t := .Values.tracing }}
{{- if and $t.enabled (not $t.otlpEndpoint) }}
{{- fail "tracing.enabled: set tracing.otlpEndpoint (the collector's OTLP/gRPC endpoint, e.g. http://otel-collector:4317)" }}
{{- end }}
{{- range $name, $ca := dict "postgresql" .Values.postgresql.tlsCa "redis" .Values.redis.tlsCa "kafka" .Values.kafka.tlsCa }}
{{- if and $ca.secret $ca.configMap }}
{{- fail (printf "%s.tlsCa: set secret or configMap, not both" $name) }}
{{- end }}
{{- end }}
{{- if and (include "orderflow.hasCa" .Values.redis.tlsCa) (not .Values.redis.existingSecret) (not (hasPrefix "rediss://" .Values.redis.url)) }}
{{- fail "redis.tlsCa is set but redis.url is not rediss://: the CA is used only for TLS" }}
{{- end }}
{{- if include "orderflow.hasCa" $pg.tlsCa }}
{{- range $key, $url := include "orderflow.storedDatabaseUrls" . | fromYaml }}
{{- if not (contains "sslrootcert=/etc/orderflow/postgresql/ca.pem" $url) }}
{{- $value := ternary "postgresql.url" (printf "postgresql.schemas.%s.url" (trimPrefix "database-url-" $key)) (eq $key "database-url") }}
{{- fail (printf "postgresql.tlsCa is mounted at /etc/orderflow/postgresql/ca.pem: add sslmode=verify-full&sslrootcert=/etc/orderflow/postgresql/ca.pem to the query of %s" $value) }}
{{- end }}
{{- end }}
{{- end }}
{{- $k := .Values.kafka }}
{{- $protocol := index $k.properties "security.protocol" | default "PLAINTEXT" | toString | upper }}
{{- if and $k.sasl.passwordSecret (not (has $protocol (list "SASL_PLAINTEXT" "SASL_SSL"))) }}
{{- fail "kafka.sasl.passwordSecret is set: set kafka.properties security.protocol to SASL_SSL (or SASL_PLAINTEXT), with sasl.mechanism and sasl.username" }}
{{- end }}
{{- if and $k.sasl.passwordSecret (not (index $k.properties "sasl.username")) }}
{{- fail "kafka.sasl.passwordSecret is set: set kafka.properties sasl.username too" }}
{{- end }}
{{- if and (include "orderflow.hasCa" $k.tlsCa) (hasKey $k.properties "ssl.ca.location") }}
{{- fail "kafka.tlsCa sets ssl.ca.location itself: drop it from kafka.properties" }}
{{- end }}
{{- if and .Values.consumerWorker.keda.enabled (ne $protocol "PLAINTEXT") (not .Values.consumerWorker.keda.authenticationRef) }}
{{- fail (printf "consumerWorker.keda.enabled with Kafka security.protocol %s: set consumerWorker.keda.authenticationRef, a KEDA TriggerAuthentication with the brokers' TLS/SASL settings (KEDA reads the lag from the brokers itself)" $protocol) }}
{{- end }}
{{- end }}

{{/*
The pod security context of every pod: non-root (uid/gid 65532, the image's user), the
runtime's default seccomp profile.
*/}}
{{- define "orderflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The container security context: read-only root filesystem, no privilege, no capability. */}}
{{- define "orderflow.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
A container's env list: the chart's variables ($.env, a list), then the global extraEnv, then the
component's extraEnv. A variable named in a later list replaces the earlier one (no duplicate
names, which server-side apply rejects). Use: (dict "env" $env "global" .Values.extraEnv
"local" $values.extraEnv)
*/}}
{{- define "orderflow.mergeEnv" -}}
{{- $local := .local | default list }}
{{- $global := .global | default list }}
{{- $localNames := list }}
{{- range $local }}{{ $localNames = append $localNames .name }}{{ end }}
{{- $globalNames := list }}
{{- range $global }}{{ $globalNames = append $globalNames .name }}{{ end }}
{{- $out := list }}
{{- range .env }}
{{- if not (or (has .name $localNames) (has .name $globalNames)) }}{{ $out = append $out . }}{{ end }}
{{- end }}
{{- range $global }}
{{- if not (has .name $localNames) }}{{ $out = append $out . }}{{ end }}
{{- end }}
{{- range $local }}{{ $out = append $out . }}{{ end }}
{{- toYaml $out }}
{{- end }}

{{/*
A value as a string for an environment variable: integers stay integers (values parsed from YAML
are float64, which would print 1000000 as 1e+06).
*/}}
{{- define "orderflow.envString" -}}
{{- if or (kindIs "float64" .) (kindIs "float32" .) -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else -}}
{{- toString . }}
{{- end }}
{{- end }}

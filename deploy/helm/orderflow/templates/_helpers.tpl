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
(at most 16 characters), so the prefix is cut at 46 to keep them within 63.
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
readiness probe checks, whether they have a Service (and so an HPA option), and what they talk to.
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
inventory-svc:
  values: inventorySvc
  binary: inventory-svc
  port: 50052
  listenEnv: ORDERFLOW_INVENTORY_LISTEN
  grpcService: orderflow.inventory.v1.InventoryService
  service: true
  redis: true
notify-svc:
  values: notifySvc
  binary: notify-svc
  port: 50053
  listenEnv: ORDERFLOW_NOTIFY_LISTEN
  grpcService: orderflow.notify.v1.NotificationService
  service: true
  redis: false
consumer-worker:
  values: consumerWorker
  binary: consumer-worker
  port: 50054
  listenEnv: ORDERFLOW_WORKER_LISTEN
  grpcService: orderflow.consumer.v1.ConsumerStatusService
  service: false
  redis: false
{{- end }}

{{/* The five order event topics, before kafka.topicPrefix. */}}
{{- define "orderflow.eventTopics" -}}
- order-created
- order-paid
- order-cancelled
- order-shipped
- order-completed
{{- end }}

{{/* The Secret holding ORDERFLOW_DATABASE_URL, and its key. */}}
{{- define "orderflow.databaseSecretName" -}}
{{- default (include "orderflow.fullname" .) .Values.postgresql.existingSecret }}
{{- end }}
{{- define "orderflow.databaseSecretKey" -}}
{{- ternary .Values.postgresql.existingSecretKey "database-url" (ne .Values.postgresql.existingSecret "") }}
{{- end }}

{{/* The Secret holding ORDERFLOW_REDIS_URL, and its key. */}}
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
{{- if or (not .Values.postgresql.existingSecret) (not .Values.redis.existingSecret) (and .Values.notifySvc.webhook.url .Values.notifySvc.webhook.secret (not .Values.notifySvc.webhook.existingSecret)) -}}
true
{{- end }}
{{- end }}

{{/* Checks the values templates cannot express in the schema; fails the render with a reason. */}}
{{- define "orderflow.validate" -}}
{{- $w := .Values.notifySvc.webhook }}
{{- if and $w.url (not $w.secret) (not $w.existingSecret) }}
{{- fail "notifySvc.webhook.url is set: set notifySvc.webhook.secret or notifySvc.webhook.existingSecret too (deliveries are signed)" }}
{{- end }}
{{- if and (not .Values.postgresql.existingSecret) (not .Values.postgresql.url) }}
{{- fail "set postgresql.url or postgresql.existingSecret" }}
{{- end }}
{{- if and (not .Values.redis.existingSecret) (not .Values.redis.url) }}
{{- fail "set redis.url or redis.existingSecret" }}
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

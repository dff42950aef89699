{{/* Names and labels shared by every template. */}}
{{- define "vastfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vastfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "vastfleet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "vastfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vastfleet
{{- end }}

{{/* Selector labels of one component: api, worker or redis. */}}
{{- define "vastfleet.selector" -}}
app.kubernetes.io/name: {{ include "vastfleet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "vastfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vastfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vastfleet.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The Redis URL for the app containers, built from env vars so a password never lands in a manifest. */}}
{{- define "vastfleet.redisEnv" -}}
{{- if .Values.redis.enabled }}
{{- if .Values.redis.passwordSecret.secretName }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.passwordSecret.secretName }}
      key: {{ .Values.redis.passwordSecret.key }}
- name: VASTFLEET_REDIS_URL
  value: "redis://:$(REDIS_PASSWORD)@{{ include "vastfleet.fullname" . }}-redis:6379/0"
{{- else }}
- name: VASTFLEET_REDIS_URL
  value: "redis://{{ include "vastfleet.fullname" . }}-redis:6379/0"
{{- end }}
{{- else }}
- name: VASTFLEET_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "externalRedis.urlSecret.secretName is required when redis.enabled is false" .Values.externalRedis.urlSecret.secretName }}
      key: {{ .Values.externalRedis.urlSecret.key }}
{{- end }}
{{- end }}

{{/* Environment common to the API and the workers. */}}
{{- define "vastfleet.env" -}}
{{ include "vastfleet.redisEnv" . | trim }}
{{- range $name := list "VASTFLEET_VAST_API_KEY" "VAST_API_KEY" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.secrets.vastApiKey.secretName }}
      key: {{ $.Values.secrets.vastApiKey.key }}
{{- end }}
{{- range $name := list "VASTFLEET_API_TOKEN" "VASTFLEET_TOKEN" }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.secrets.adminToken.secretName }}
      key: {{ $.Values.secrets.adminToken.key }}
{{- end }}
- name: VASTFLEET_AGENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.internal.secretName }}
      key: {{ .Values.secrets.internal.agentSecretKey }}
- name: VASTFLEET_STORAGE_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.internal.secretName }}
      key: {{ .Values.secrets.internal.storageSecretKey }}
{{- with .Values.secrets.storage }}
{{- if .secretName }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- with .Values.storage.bucket }}
- name: VASTFLEET_S3_BUCKET
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.endpointUrl }}
- name: VASTFLEET_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.publicUrl }}
- name: VASTFLEET_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.money }}
{{- range $key, $name := dict "maxUsdPerHour" "VASTFLEET_MAX_USD_PER_HOUR" "maxUsdPerDay" "VASTFLEET_MAX_USD_PER_DAY" "maxUsdPerMonth" "VASTFLEET_MAX_USD_PER_MONTH" "creditReserveUsd" "VASTFLEET_CREDIT_RESERVE_USD" "salvageConnection" "VASTFLEET_SALVAGE_CONNECTION" }}
{{- with (index $.Values.money $key) }}
- name: {{ $name }}
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

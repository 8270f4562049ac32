{{/*
Chart name (nameOverride, else the chart's), at most 63 characters.
*/}}
{{- define "kache-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of every resource, at most 63 characters. A release name that
already contains the name is used alone.
*/}}
{{- define "kache-service.fullname" -}}
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

{{/*
helm.sh/chart label value.
*/}}
{{- define "kache-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "kache-service.labels" -}}
helm.sh/chart: {{ include "kache-service.chart" . }}
{{ include "kache-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels. Immutable on a Deployment: they must stay kache's.
*/}}
{{- define "kache-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kache-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Pod template labels: podLabels plus the selector labels, which win over a
podLabels entry of the same key so the Deployment keeps selecting its Pods.
*/}}
{{- define "kache-service.podLabels" -}}
{{- $labels := include "kache-service.selectorLabels" . | fromYaml }}
{{- toYaml (merge $labels (deepCopy .Values.podLabels)) }}
{{- end }}

{{/*
Pod template annotations: the SigNoz scrape annotations when signoz.scrape,
then podAnnotations, which win over them. Empty when there are none.
*/}}
{{- define "kache-service.podAnnotations" -}}
{{- $annotations := dict }}
{{- if .Values.signoz.scrape }}
{{- $_ := set $annotations "signoz.io/scrape" "true" }}
{{- $_ := set $annotations "signoz.io/port" (toString (.Values.signoz.port | default .Values.service.port)) }}
{{- $_ := set $annotations "signoz.io/path" (toString .Values.signoz.path) }}
{{- end }}
{{- $annotations = mergeOverwrite $annotations (deepCopy .Values.podAnnotations) }}
{{- if $annotations }}
{{- toYaml $annotations }}
{{- end }}
{{- end }}

{{/*
Image reference; an empty tag means latest, as in kache's chart.
*/}}
{{- define "kache-service.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default "latest") }}
{{- end }}

{{/*
ServiceAccount of the Pod when ha.enabled.
*/}}
{{- define "kache-service.serviceAccountName" -}}
{{- if .Values.ha.serviceAccount.name }}
{{- .Values.ha.serviceAccount.name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- include "kache-service.fullname" . }}
{{- end }}
{{- end }}

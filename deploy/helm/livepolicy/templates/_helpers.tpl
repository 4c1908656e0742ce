{{/*
Names, labels and shared snippets of the livepolicy chart.
*/}}

{{- define "livepolicy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name; 63 characters minus the longest suffix (-controller-metrics). */}}
{{- define "livepolicy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "livepolicy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "livepolicy.labels" -}}
helm.sh/chart: {{ include "livepolicy.chart" . }}
app.kubernetes.io/name: {{ include "livepolicy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "root" $ "component" "controller"). */}}
{{- define "livepolicy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "livepolicy.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "livepolicy.componentLabels" -}}
{{ include "livepolicy.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "livepolicy.controller.fullname" -}}
{{- printf "%s-controller" (include "livepolicy.fullname" .) }}
{{- end }}

{{- define "livepolicy.agent.fullname" -}}
{{- printf "%s-agent" (include "livepolicy.fullname" .) }}
{{- end }}

{{- define "livepolicy.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (include "livepolicy.controller.fullname" .) .Values.controller.serviceAccount.name }}
{{- else }}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create is false" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "livepolicy.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "livepolicy.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The ConfigMap of policies as namespace/name (the controller's --policies-configmap). */}}
{{- define "livepolicy.policiesConfigMap" -}}
{{- $cm := .Values.policies.existingConfigMap }}
{{- if not $cm }}
{{- printf "%s/%s-policies" .Release.Namespace (include "livepolicy.fullname" .) }}
{{- else if contains "/" $cm }}
{{- $cm }}
{{- else }}
{{- printf "%s/%s" .Release.Namespace $cm }}
{{- end }}
{{- end }}

{{- define "livepolicy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "livepolicy.agent.tokenSecret" -}}
{{- default (printf "%s-token" (include "livepolicy.agent.fullname" .)) .Values.agent.existingTokenSecret }}
{{- end }}

{{- define "livepolicy.agent.tlsSecret" -}}
{{- default (printf "%s-tls" (include "livepolicy.agent.fullname" .)) .Values.agent.tls.existingSecret }}
{{- end }}

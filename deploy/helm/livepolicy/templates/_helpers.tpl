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

{{/*
The agents share one certificate and key: agent.tls.identity shared, or auto with a
Secret, cert-manager or mutual TLS asked for (all three mean one CA for every agent).
*/}}
{{- define "livepolicy.agent.tlsShared" -}}
{{- $t := .Values.agent.tls }}
{{- if not (has $t.identity (list "auto" "perNode" "shared")) }}
{{- fail "agent.tls.identity must be auto, perNode or shared" }}
{{- end }}
{{- $wantsCA := or $t.existingSecret $t.certManager.enabled $t.requireClientCert }}
{{- if and (eq $t.identity "perNode") $wantsCA }}
{{- fail "agent.tls.identity=perNode: each agent makes its own certificate, so agent.tls.existingSecret, agent.tls.certManager and agent.tls.requireClientCert (one CA for all agents) do not go with it; use identity shared (or auto)" }}
{{- end }}
{{- if and $t.enabled (or (eq $t.identity "shared") (and (eq $t.identity "auto") $wantsCA)) }}true{{ end }}
{{- end }}

{{/* Each agent makes its own key and publishes its certificate on its pod. */}}
{{- define "livepolicy.agent.tlsPerNode" -}}
{{- if and .Values.agent.tls.enabled (not (include "livepolicy.agent.tlsShared" .)) }}true{{ end }}
{{- end }}

{{/* The chart makes the agent's certificate itself (no existing Secret, no cert-manager). */}}
{{- define "livepolicy.agent.tlsGenerated" -}}
{{- $t := .Values.agent.tls }}
{{- if and (include "livepolicy.agent.tlsShared" .) (not $t.existingSecret) (not $t.certManager.enabled) }}true{{ end }}
{{- end }}

{{/* The chart makes the shared token itself (sharedToken mode, no token or Secret given). */}}
{{- define "livepolicy.agent.tokenGenerated" -}}
{{- $a := .Values.agent }}
{{- if and (eq $a.auth.mode "sharedToken") (not $a.existingTokenSecret) (not $a.token) }}true{{ end }}
{{- end }}

{{/*
Whether this render can read the cluster: `helm install/upgrade` and `--dry-run=server`
can, `helm template`, `helm lint` and Argo CD (which runs `helm template`) cannot, and
there every `lookup` is empty. kube-system exists in every cluster.
*/}}
{{- define "livepolicy.online" -}}
{{- if (lookup "v1" "Namespace" "" "kube-system") }}true{{ end }}
{{- end }}

{{/*
The agent's secrets, computed once per render and shared (through .Values) by the Secrets
and the DaemonSet's checksum: {"token", "crt", "key", "ca", "sans", "source"} (base64 where
the Secret wants it; absent parts are empty). Only what the chart generates is random:
existing Secrets, cert-manager and a given agent.token give the same output on every
render (GitOps). Generated parts are kept across upgrades (the installed Secrets are read
back with lookup); a render that cannot read the cluster refuses to make them, unless
agent.generatedSecrets is everyRender.
*/}}
{{- define "livepolicy.agent.secrets" -}}
{{- $a := .Values.agent }}
{{- if not (hasKey $a "__generated") }}
{{- $t := $a.tls }}
{{- $source := "none" }}
{{- if include "livepolicy.agent.tlsPerNode" . }}
{{- $source = "perNode" }}
{{- else if $t.enabled }}
{{- $source = ternary (printf "existingSecret=%s" $t.existingSecret) (ternary (printf "certManager=%s" (toJson (dict "issuerRef" $t.certManager.issuerRef "dnsNames" $t.dnsNames "ipAddresses" $t.ipAddresses))) "generated" $t.certManager.enabled) (not (empty $t.existingSecret)) }}
{{- end }}
{{- $out := dict "token" "" "crt" "" "key" "" "ca" "" "sans" "" "source" $source }}
{{- $genToken := include "livepolicy.agent.tokenGenerated" . }}
{{- $genTLS := include "livepolicy.agent.tlsGenerated" . }}
{{- if and (or $genToken $genTLS) (ne $a.generatedSecrets "everyRender") (not (include "livepolicy.online" .)) }}
{{- $what := list }}
{{- if $genTLS }}{{ $what = append $what "the agents' CA and TLS key (agent.tls)" }}{{ end }}
{{- if $genToken }}{{ $what = append $what "the shared agent token (agent.token)" }}{{ end }}
{{- fail (printf "this render cannot read the cluster (helm template, helm lint, Argo CD), so %s would be new random values on every render. For GitOps give agent.tls.existingSecret or set agent.tls.certManager.enabled=true%s (docs/gitops.md); or install with helm install/upgrade, which generates them once and keeps them; or set agent.generatedSecrets=everyRender for a throwaway render" (join " and " $what) (ternary ", and agent.existingTokenSecret or agent.token" "" (not (empty $genToken)))) }}
{{- end }}
{{- if eq $a.auth.mode "sharedToken" }}
{{- if $a.existingTokenSecret }}
{{- $_ := set $out "token" (printf "existingSecret=%s" $a.existingTokenSecret) }}
{{- else }}
{{- $token := $a.token }}
{{- if not $token }}
{{- $old := lookup "v1" "Secret" .Release.Namespace (include "livepolicy.agent.tokenSecret" .) }}
{{- if and $old $old.data (index $old.data "token") }}
{{- $token = b64dec (index $old.data "token") }}
{{- else }}
{{- $token = randAlphaNum 48 }}
{{- end }}
{{- end }}
{{- $_ := set $out "token" ($token | b64enc) }}
{{- end }}
{{- end }}
{{- if $genTLS }}
{{- $sans := printf "dns=%s;ip=%s" (join "," $t.dnsNames) (join "," $t.ipAddresses) }}
{{- $old := lookup "v1" "Secret" .Release.Namespace (include "livepolicy.agent.tlsSecret" .) }}
{{- if and $old $old.data $old.metadata.annotations (eq (index $old.metadata.annotations "livepolicy.io/tls-sans") $sans) }}
{{- $_ := set $out "crt" (index $old.data "tls.crt") }}
{{- $_ := set $out "key" (index $old.data "tls.key") }}
{{- $_ := set $out "ca" (index $old.data "ca.crt") }}
{{- else }}
{{- if and (empty $t.dnsNames) (empty $t.ipAddresses) }}
{{- fail "agent.tls: give dnsNames or ipAddresses for the generated certificate, or agent.tls.existingSecret, or set agent.tls.enabled=false" }}
{{- end }}
{{- $gca := genCA (printf "%s CA" (include "livepolicy.agent.fullname" .)) (int $t.validityDays) }}
{{- $cert := genSignedCert (include "livepolicy.agent.fullname" .) $t.ipAddresses $t.dnsNames (int $t.validityDays) $gca }}
{{- $_ := set $out "crt" ($cert.Cert | b64enc) }}
{{- $_ := set $out "key" ($cert.Key | b64enc) }}
{{- $_ := set $out "ca" ($gca.Cert | b64enc) }}
{{- end }}
{{- $_ := set $out "sans" $sans }}
{{- end }}
{{- $_ := set $a "__generated" $out }}
{{- end }}
{{- toJson (index $a "__generated") }}
{{- end }}

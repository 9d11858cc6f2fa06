{{/* Chart name, overridable. */}}
{{- define "xks-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified resource name: RELEASE-CHART, or RELEASE when it already contains the chart name. */}}
{{- define "xks-proxy.fullname" -}}
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

{{- define "xks-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "xks-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "xks-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "xks-proxy.labels" -}}
helm.sh/chart: {{ include "xks-proxy.chart" . }}
{{ include "xks-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* proxy.fleetSize: the fixed replica count, or the most pods the HPA may run. */}}
{{- define "xks-proxy.fleetSize" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas | int }}{{ else }}{{ .Values.replicaCount | int }}{{ end }}
{{- end }}

{{/* Container ports, from the proxy config (defaults as in the proxy's schema). */}}
{{- define "xks-proxy.serverPort" -}}{{ (.Values.config.server | default dict).port | default 8443 | int }}{{- end }}
{{- define "xks-proxy.opsPort" -}}{{ (.Values.config.ops | default dict).port | default 9090 | int }}{{- end }}

{{/* Audit to files needs a volume per pod, so the pods then come from a StatefulSet. */}}
{{- define "xks-proxy.workloadKind" -}}{{ if eq .Values.audit.destination "file" }}StatefulSet{{ else }}Deployment{{ end }}{{- end }}

{{/* Where a pod's audit volume is mounted (audit.destination: file). */}}
{{- define "xks-proxy.auditDir" -}}/var/lib/xks-proxy/audit{{- end }}

{{/* Where the ConfigMap is mounted: a directory (not subPath) so ConfigMap updates reach the pod. */}}
{{- define "xks-proxy.configFile" -}}/etc/xks-proxy/config/config.yaml{{- end }}

{{/*
The proxy config: .Values.config with the chart-owned fields filled in. Rendered as YAML so both the
ConfigMap and the tests see the same document.
*/}}
{{- define "xks-proxy.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $server := $cfg.server | default dict }}
{{- if .Values.tls.enabled }}
{{- $tls := $server.tls | default dict }}
{{- $_ := set $tls "certFile" "/etc/xks-proxy/tls/tls.crt" }}
{{- $_ := set $tls "keyFile" "/etc/xks-proxy/tls/tls.key" }}
{{- if .Values.tls.clientCa.enabled }}
{{- $_ := set $tls "clientCaFile" "/etc/xks-proxy/tls/client-ca.pem" }}
{{- else if $tls.allowedClientSubjects }}
{{- fail "config.server.tls.allowedClientSubjects needs tls.clientCa.enabled" }}
{{- end }}
{{- $_ := set $server "tls" $tls }}
{{- else }}
{{- if not $server.insecurePlainHttp }}
{{- fail "tls.enabled=false needs config.server.insecurePlainHttp=true (TLS terminated upstream)" }}
{{- end }}
{{- $_ := unset $server "tls" }}
{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- $ops := $cfg.ops | default dict }}
{{- if and (hasKey $ops "enabled") (not $ops.enabled) }}
{{- fail "config.ops.enabled must stay true: the probes use /livez and /readyz on the ops port" }}
{{- end }}
{{- $proxy := $cfg.proxy | default dict }}
{{- $_ := set $proxy "fleetSize" (include "xks-proxy.fleetSize" . | int) }}
{{- $_ := set $cfg "proxy" $proxy }}
{{- /* The proxy takes exactly one of hsm and hsms: a non-empty hsms (a fleet) replaces the default hsm. */}}
{{- if $cfg.hsms }}
{{- $_ := unset $cfg "hsm" }}
{{- if .Values.hsmPin.existingSecret }}
{{- /* The Secret's PIN goes to the members that name none of their own (each HSM may have another PIN). */}}
{{- range $cfg.hsms }}
{{- if not .pin }}
{{- $_ := set . "pin" (dict "env" "XKS_HSM_PIN") }}
{{- end }}
{{- end }}
{{- end }}
{{- else }}
{{- $_ := unset $cfg "hsms" }}
{{- if .Values.hsmPin.existingSecret }}
{{- $_ := set $cfg.hsm "pin" (dict "env" "XKS_HSM_PIN") }}
{{- end }}
{{- end }}
{{- if eq .Values.audit.destination "stdout" }}
{{- $_ := set $cfg "audit" (dict "stdout" true) }}
{{- else if eq .Values.audit.destination "file" }}
{{- $_ := set $cfg "audit" (dict "file" (printf "%s/audit.log" (include "xks-proxy.auditDir" .))) }}
{{- else if ne .Values.audit.destination "none" }}
{{- fail "audit.destination must be stdout, file or none" }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

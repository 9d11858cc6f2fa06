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

{{/*
The proxy pods' labels: no chart version, and the version of the image they run, so that a pod rolls only
when what it runs changes (a chart bump alone, or a new appVersion with image.tag pinned, does not).
*/}}
{{- define "xks-proxy.podLabels" -}}
{{ include "xks-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ include "xks-proxy.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "xks-proxy.imageTag" -}}{{ .Values.image.tag | default .Chart.AppVersion }}{{- end }}
{{- define "xks-proxy.image" -}}{{ .Values.image.repository }}:{{ include "xks-proxy.imageTag" . }}{{- end }}

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
{{- define "xks-proxy.configMapFile" -}}/etc/xks-proxy/config/config.yaml{{- end }}

{{/*
With the rotation CronJob, the config lives on rotation.cronJob.configVolume, which the CronJob edits:
the proxies read it there (seeded once from the ConfigMap, see the Deployment's seed-config init container).
*/}}
{{- define "xks-proxy.configOnVolume" -}}{{ if .Values.rotation.cronJob.enabled }}true{{ end }}{{- end }}
{{- define "xks-proxy.configVolumeDir" -}}/var/lib/xks-proxy/config{{- end }}
{{- define "xks-proxy.configFile" -}}
{{- if include "xks-proxy.configOnVolume" . }}{{ include "xks-proxy.configVolumeDir" . }}/{{ .Values.rotation.cronJob.configFile }}{{ else }}{{ include "xks-proxy.configMapFile" . }}{{ end }}
{{- end }}

{{/*
SHA-256 over exactly the settings the proxy reads only at start (reload-rules.json, generated from the
proxy's schema): the pod template's annotation, so `helm upgrade` rolls the pods when one of them changes
and leaves them running when only live settings (key stores, groups, policies, fleet size) change.
*/}}
{{- define "xks-proxy.restartChecksum" -}}
{{- $cfg := include "xks-proxy.config" . | fromYaml }}
{{- $picked := dict }}
{{- range $path := (.Files.Get "reload-rules.json" | fromJson).restart }}
{{- $v := $cfg }}
{{- range $key := splitList "." $path }}
{{- if kindIs "map" $v }}{{ $v = get $v $key }}{{ else }}{{ $v = "" }}{{ end }}
{{- end }}
{{- $_ := set $picked $path $v }}
{{- end }}
{{- $picked | toJson | sha256sum }}
{{- end }}

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
{{- /* The Secret's PIN goes to the members that name none of their own (each HSM may have another PIN). */}}
{{- range $cfg.hsms }}
{{- if not .pin }}
{{- if not $.Values.hsmPin.existingSecret }}
{{- fail (printf "config.hsms %s: give it a pin, or set hsmPin.existingSecret" .id) }}
{{- end }}
{{- $_ := set . "pin" (dict "env" "XKS_HSM_PIN") }}
{{- end }}
{{- end }}
{{- else }}
{{- $_ := unset $cfg "hsms" }}
{{- $_ := required "config.hsm.modulePath is required: the path of your HSM vendor's PKCS#11 library in the pod (helm/examples/ has CloudHSM, Luna and the SoftHSM2 demo image)" $cfg.hsm.modulePath }}
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

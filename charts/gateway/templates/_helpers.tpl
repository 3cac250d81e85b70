{{/* Name of every object of this chart: the release name (e.g. weft-ingress). */}}
{{- define "weft-gateway.name" -}}
{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the gateway pods (Deployment and Service). */}}
{{- define "weft-gateway.selectorLabels" -}}
app: {{ include "weft-gateway.name" . }}
{{- range $k, $v := .Values.labels }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}

{{/* Labels of every object of this chart. */}}
{{- define "weft-gateway.labels" -}}
{{ include "weft-gateway.selectorLabels" . }}
app.kubernetes.io/name: {{ include "weft-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: ingress-gateway
app.kubernetes.io/part-of: weft
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weft-gateway.image" -}}
{{ .Values.image.hub }}/waypoint:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The pod's annotations: Prometheus scraping of the metrics port, then .Values.podAnnotations (which win); weft.io/credential-namespaces (the extra namespaces whose Secrets the gateway reads, for weft-control's listener status) wins over both. */}}
{{- define "weft-gateway.podAnnotations" -}}
{{- $scrape := dict "prometheus.io/scrape" "true" "prometheus.io/port" "15020" "prometheus.io/path" "/metrics" }}
{{- $weft := dict }}
{{- with .Values.credentialNamespaces }}
{{- $_ := set $weft "weft.io/credential-namespaces" (join "," .) }}
{{- end }}
{{- toYaml (merge $weft (deepCopy (.Values.podAnnotations | default dict)) $scrape) }}
{{- end }}

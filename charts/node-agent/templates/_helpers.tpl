{{/* Name of every object of this chart but the ServiceAccount; one agent DaemonSet per cluster. */}}
{{- define "weft-node-agent.name" -}}
weft-node-agent
{{- end }}

{{/* Labels that select the agent pods (DaemonSet). */}}
{{- define "weft-node-agent.selectorLabels" -}}
app: {{ include "weft-node-agent.name" . }}
{{- end }}

{{/* Labels of every object of this chart. */}}
{{- define "weft-node-agent.labels" -}}
{{ include "weft-node-agent.selectorLabels" . }}
app.kubernetes.io/name: {{ include "weft-node-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: node-agent
app.kubernetes.io/part-of: weft
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weft-node-agent.image" -}}
{{ .Values.image.hub }}/node-agent:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The pod's annotations: Prometheus scraping of the metrics port and kubectl's default container (logs, exec), then .Values.podAnnotations (which win). */}}
{{- define "weft-node-agent.podAnnotations" -}}
{{- $defaults := dict "prometheus.io/scrape" "true" "prometheus.io/port" "15020" "prometheus.io/path" "/metrics" "kubectl.kubernetes.io/default-container" "node-agent" }}
{{- toYaml (merge (deepCopy (.Values.podAnnotations | default dict)) $defaults) }}
{{- end }}

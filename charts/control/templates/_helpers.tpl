{{/* Name of every object of this chart; one control plane per cluster. */}}
{{- define "weft-control.name" -}}
weft-control
{{- end }}

{{/* Labels that select the control plane pods (Deployment, Service, PDB). */}}
{{- define "weft-control.selectorLabels" -}}
app: {{ include "weft-control.name" . }}
{{- end }}

{{/* Labels of every object of this chart. */}}
{{- define "weft-control.labels" -}}
{{ include "weft-control.selectorLabels" . }}
app.kubernetes.io/name: {{ include "weft-control.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: control-plane
app.kubernetes.io/part-of: weft
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "weft-control.image" -}}
{{ .Values.image.hub }}/control:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The image of waypoint Deployments: hub and tag default to the control plane's. */}}
{{- define "weft-control.waypointImage" -}}
{{ .Values.waypoint.image.hub | default .Values.image.hub }}/waypoint:{{ .Values.waypoint.image.tag | default .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* The pod's annotations: Prometheus scraping of the monitoring port (as istiod's), then .Values.podAnnotations (which win). */}}
{{- define "weft-control.podAnnotations" -}}
{{- $scrape := dict "prometheus.io/scrape" "true" "prometheus.io/port" "15014" "prometheus.io/path" "/metrics" }}
{{- toYaml (merge (deepCopy (.Values.podAnnotations | default dict)) $scrape) }}
{{- end }}

{{- define "weft-control.rootNamespace" -}}
{{ .Values.rootNamespace | default .Release.Namespace }}
{{- end }}

{{/* namespace/name of the node agent's service account. */}}
{{- define "weft-control.nodeAgentServiceAccount" -}}
{{ .Values.nodeAgent.namespace | default .Release.Namespace }}/{{ .Values.nodeAgent.serviceAccount }}
{{- end }}

{{/* The pod's affinity: .Values.affinity plus the anti-affinity that spreads replicas over nodes. */}}
{{- define "weft-control.affinity" -}}
{{- $affinity := deepCopy (.Values.affinity | default dict) }}
{{- if and (ne .Values.podAntiAffinity "none") (not (hasKey $affinity "podAntiAffinity")) }}
{{- $term := dict "labelSelector" (dict "matchLabels" (include "weft-control.selectorLabels" . | fromYaml)) "topologyKey" "kubernetes.io/hostname" }}
{{- if eq .Values.podAntiAffinity "required" }}
{{- $_ := set $affinity "podAntiAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
{{- else }}
{{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list (dict "weight" 100 "podAffinityTerm" $term))) }}
{{- end }}
{{- end }}
{{- if $affinity }}
{{- toYaml $affinity }}
{{- end }}
{{- end }}

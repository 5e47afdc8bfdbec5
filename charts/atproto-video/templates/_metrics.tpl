{{/* Prometheus metrics of one component: its env and container port, empty when
     metrics.enabled is false (the process then opens no metrics listener: VIDEO_METRICS_PORT
     defaults to 0). Called with (dict "root" $ "port" <port>). */}}
{{- define "atproto-video.metricsEnv" -}}
{{- if .root.Values.metrics.enabled -}}
- {name: VIDEO_METRICS_HOST, value: "0.0.0.0"}
- {name: VIDEO_METRICS_PORT, value: {{ .port | quote }}}
{{- end }}
{{- end -}}

{{- define "atproto-video.metricsPort" -}}
{{- if .root.Values.metrics.enabled -}}
- {name: metrics, containerPort: {{ .port }}}
{{- end }}
{{- end -}}

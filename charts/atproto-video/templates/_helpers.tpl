{{- define "atproto-video.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "atproto-video.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "atproto-video.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "atproto-video.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "atproto-video.dbSecret" -}}
{{- .Values.database.existingSecret | default (printf "%s-db" (include "atproto-video.fullname" .)) -}}
{{- end -}}

{{- define "atproto-video.tokenSecret" -}}
{{- .Values.tokenKey.existingSecret | default (printf "%s-token-key" (include "atproto-video.fullname" .)) -}}
{{- end -}}

{{- define "atproto-video.claim" -}}
{{- .Values.storage.existingClaim | default (printf "%s-storage" (include "atproto-video.fullname" .)) -}}
{{- end -}}

{{/* Environment shared by the API and the operator: one config object, flat VIDEO_* vars. */}}
{{- define "atproto-video.env" -}}
- {name: VIDEO_SERVICE_DID, value: {{ required "serviceDid is required" .Values.serviceDid | quote }}}
- {name: VIDEO_PUBLIC_URL, value: {{ .Values.publicUrl | quote }}}
- {name: VIDEO_DID_PLC_URL, value: {{ .Values.didPlcUrl | quote }}}
- name: VIDEO_DB_URL
  valueFrom: {secretKeyRef: {name: {{ include "atproto-video.dbSecret" . }}, key: {{ .Values.database.existingSecretKey }}}}
- name: VIDEO_TOKEN_KEY
  valueFrom: {secretKeyRef: {name: {{ include "atproto-video.tokenSecret" . }}, key: {{ .Values.tokenKey.existingSecretKey }}}}
- {name: VIDEO_STORAGE_DIR, value: /storage}
- {name: VIDEO_DATA_DIR, value: /tmp}
- {name: VIDEO_EXECUTOR, value: kubernetes}
- {name: VIDEO_K8S_NAMESPACE, value: {{ .Release.Namespace | quote }}}
- {name: VIDEO_MAX_UPLOAD_BYTES, value: {{ .Values.limits.maxUploadBytes | int64 | quote }}}
- {name: VIDEO_MAX_DURATION_S, value: {{ .Values.limits.maxDurationSeconds | quote }}}
- {name: VIDEO_MAX_FPS, value: {{ .Values.limits.maxFps | quote }}}
- {name: VIDEO_DAILY_VIDEO_LIMIT, value: {{ .Values.limits.dailyVideoLimit | quote }}}
- {name: VIDEO_DAILY_BYTE_LIMIT, value: {{ .Values.limits.dailyByteLimit | int64 | quote }}}
{{- with .Values.kubernetesServiceOverride }}
{{- if .host }}
- {name: KUBERNETES_SERVICE_HOST, value: {{ .host | quote }}}
- {name: KUBERNETES_SERVICE_PORT, value: {{ .port | quote }}}
{{- end }}
{{- end }}
{{- end -}}

{{- define "atproto-video.storageVolume" -}}
- name: storage
{{- if .Values.storage.hostPath }}
  hostPath: {path: {{ .Values.storage.hostPath }}, type: DirectoryOrCreate}
{{- else }}
  persistentVolumeClaim: {claimName: {{ include "atproto-video.claim" . }}}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

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

{{/* The quickstart Postgres (postgresql.enabled): its StatefulSet, Service and password Secret. */}}
{{- define "atproto-video.postgresql" -}}
{{- printf "%s-postgresql" (include "atproto-video.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the API and the operator reach it: the node's loopback with hostNetwork, else the
     headless Service (no kube-proxy needed). */}}
{{- define "atproto-video.postgresqlHost" -}}
{{- if .Values.postgresql.hostNetwork -}}127.0.0.1{{- else -}}{{ include "atproto-video.postgresql" . }}.{{ .Release.Namespace }}.svc{{- end -}}
{{- end -}}

{{- define "atproto-video.tokenSecret" -}}
{{- .Values.tokenKey.existingSecret | default (printf "%s-token-key" (include "atproto-video.fullname" .)) -}}
{{- end -}}

{{- define "atproto-video.claim" -}}
{{- .Values.storage.existingClaim | default (printf "%s-storage" (include "atproto-video.fullname" .)) -}}
{{- end -}}

{{/* The Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or "" (boto3's chain alone). */}}
{{- define "atproto-video.s3Secret" -}}
{{- if eq .Values.storage.type "s3" -}}
{{- with .Values.storage.s3 -}}
{{- if .existingSecret -}}{{ .existingSecret }}{{- else if .accessKeyId -}}{{ printf "%s-s3" (include "atproto-video.fullname" $) }}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by the API and the operator: one config object, flat VIDEO_* vars. */}}
{{- define "atproto-video.env" -}}
- {name: VIDEO_SERVICE_DID, value: {{ required "serviceDid is required" .Values.serviceDid | quote }}}
- {name: VIDEO_PUBLIC_URL, value: {{ .Values.publicUrl | quote }}}
- {name: VIDEO_DID_PLC_URL, value: {{ .Values.didPlcUrl | quote }}}
- {name: VIDEO_DID_REFRESH_INTERVAL_S, value: {{ .Values.didRefreshIntervalSeconds | quote }}}
- name: VIDEO_DB_URL
  valueFrom: {secretKeyRef: {name: {{ include "atproto-video.dbSecret" . }}, key: {{ .Values.database.existingSecretKey }}}}
- name: VIDEO_TOKEN_KEY
  valueFrom: {secretKeyRef: {name: {{ include "atproto-video.tokenSecret" . }}, key: {{ .Values.tokenKey.existingSecretKey }}}}
{{- if eq .Values.storage.type "s3" }}
- {name: VIDEO_STORAGE, value: s3}
{{- with .Values.storage.s3 }}
- {name: VIDEO_S3_BUCKET, value: {{ required "storage.s3.bucket is required when storage.type is s3" .bucket | quote }}}
- {name: VIDEO_S3_PREFIX, value: {{ .prefix | quote }}}
- {name: VIDEO_S3_ENDPOINT, value: {{ .endpoint | quote }}}
- {name: VIDEO_S3_REGION, value: {{ .region | quote }}}
- {name: VIDEO_S3_FORCE_PATH_STYLE, value: {{ .forcePathStyle | toString | quote }}}
{{- end }}
- {name: VIDEO_PLAYBACK, value: {{ .Values.playback.mode | quote }}}
- {name: VIDEO_PLAYBACK_BASE_URL, value: {{ .Values.playback.baseUrl | quote }}}
{{- else }}
- {name: VIDEO_STORAGE, value: local}
- {name: VIDEO_STORAGE_DIR, value: /storage}
{{- end }}
{{- /* S3 stages files under $VIDEO_DATA_DIR/scratch: keep in step with atproto-video.volumeMounts. */}}
- {name: VIDEO_DATA_DIR, value: /tmp}
- {name: VIDEO_EXECUTOR, value: kubernetes}
- {name: VIDEO_K8S_NAMESPACE, value: {{ .Release.Namespace | quote }}}
{{- /* Each release reconciles only the VideoJobs its own API created. */}}
- {name: VIDEO_K8S_INSTANCE, value: {{ .Release.Name | quote }}}
- {name: VIDEO_MAX_UPLOAD_BYTES, value: {{ .Values.limits.maxUploadBytes | int64 | quote }}}
- {name: VIDEO_MAX_DURATION_S, value: {{ .Values.limits.maxDurationSeconds | quote }}}
- {name: VIDEO_MAX_FPS, value: {{ .Values.limits.maxFps | quote }}}
- {name: VIDEO_DAILY_VIDEO_LIMIT, value: {{ .Values.limits.dailyVideoLimit | quote }}}
- {name: VIDEO_DAILY_BYTE_LIMIT, value: {{ .Values.limits.dailyByteLimit | int64 | quote }}}
- {name: VIDEO_MAX_OPEN_UPLOADS, value: {{ .Values.limits.maxOpenUploads | quote }}}
- {name: VIDEO_UPLOAD_SESSION_TTL_S, value: {{ .Values.limits.uploadSessionTtlSeconds | quote }}}
{{- with .Values.kubernetesServiceOverride }}
{{- if .host }}
- {name: KUBERNETES_SERVICE_HOST, value: {{ .host | quote }}}
- {name: KUBERNETES_SERVICE_PORT, value: {{ .port | quote }}}
{{- end }}
{{- end }}
{{- end -}}

{{/* s3: no shared volume, only an emptyDir where the backend stages ($VIDEO_DATA_DIR/scratch).
     tmp: the root filesystem is read-only. */}}
{{- define "atproto-video.volumes" -}}
{{- if eq .Values.storage.type "s3" }}
- name: scratch
  emptyDir: {}
{{- else }}
- name: storage
{{- if .Values.storage.hostPath }}
  hostPath: {path: {{ .Values.storage.hostPath }}, type: DirectoryOrCreate}
{{- else }}
  persistentVolumeClaim: {claimName: {{ include "atproto-video.claim" . }}}
{{- end }}
{{- end }}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "atproto-video.volumeMounts" -}}
{{- if eq .Values.storage.type "s3" }}
- {name: tmp, mountPath: /tmp}
- {name: scratch, mountPath: /tmp/scratch}
{{- else }}
- {name: storage, mountPath: /storage}
- {name: tmp, mountPath: /tmp}
{{- end }}
{{- end -}}

{{/* Where helm test pods reach the API: the Service, or with api.hostNetwork the node's
     loopback (the pod then runs on the host network of a node that has an API pod). */}}
{{- define "atproto-video.testApiUrl" -}}
{{- if .Values.api.hostNetwork -}}
http://127.0.0.1:{{ .Values.api.port }}
{{- else -}}
http://{{ include "atproto-video.fullname" . }}:{{ .Values.api.service.port }}
{{- end -}}
{{- end -}}

{{- define "atproto-video.testPod" -}}
restartPolicy: Never
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets: {{- toYaml . | nindent 2 }}
{{- end }}
securityContext: {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- if .Values.api.hostNetwork }}
hostNetwork: true
dnsPolicy: ClusterFirstWithHostNet
affinity:
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels: {{- include "atproto-video.selector" (dict "root" . "component" "api") | nindent 12 }}
{{- end }}
{{- end -}}

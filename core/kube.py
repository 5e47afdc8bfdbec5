"""Kubernetes access shared by the API (cluster executor) and the operator.

The VideoJob resource's identity (group, names, the manifest the API creates) and a small,
blocking client for the few calls both make, returning plain dicts: the pure functions of the
operator see exactly what the API server sent. Call the client from a thread
(``asyncio.to_thread``) in async code. The CRD's schema is the operator's
(:mod:`atproto_video.operator.crd`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any, ParamSpec, Protocol, TypeVar
from urllib.parse import urlencode

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from atproto_video.core import metrics
from atproto_video.core.jobs import Job
from atproto_video.core.ladder import RUNG_NAMES
from atproto_video.core.storage import Storage

log = logging.getLogger(__name__)

GROUP = "video.atproto.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VideoJob"
PLURAL = "videojobs"
SINGULAR = "videojob"
SHORT_NAMES = ("vj",)

_NAME_OK = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")


def videojob_name(job_id: str) -> str:
    """The VideoJob's name: the job id itself when it is a valid short DNS label.

    Job ids from :func:`atproto_video.core.jobs.new_job_id` are 40 lowercase hex characters, so SREs
    can ``kubectl get vj <jobId>``; anything else is hashed to a stable, valid name. At most 40
    characters, so Job names derived from it stay within 63.
    """
    if _NAME_OK.match(job_id):
        return job_id
    return "h" + hashlib.sha256(job_id.encode()).hexdigest()[:39]


#: Which release a VideoJob belongs to: each operator reconciles only its own instance's.
LABEL_INSTANCE = f"{GROUP}/instance"
#: The operator's finalizer (it removes a deleted VideoJob's files). Set at creation, so the
#: operator does not patch each new VideoJob to add it (one write less per upload on a burst).
FINALIZER = f"{GROUP}/cleanup"


def videojob_manifest(
    job_id: str, did: str, source: str, namespace: str, renditions: list[str] | None = None,
    *, instance: str = "",
) -> dict[str, Any]:
    labels = {
        "app.kubernetes.io/name": "atproto-video",
        "app.kubernetes.io/component": "videojob",
        f"{GROUP}/job-id": videojob_name(job_id),
    }
    if instance:
        labels[LABEL_INSTANCE] = instance
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": videojob_name(job_id),
            "namespace": namespace,
            "labels": labels,
            "finalizers": [FINALIZER],
        },
        "spec": {
            "jobId": job_id,
            "did": did,
            "source": source,
            "renditions": list(renditions if renditions is not None else RUNG_NAMES),
        },
    }


def videojob_for(
    job: Job, storage: Storage, namespace: str, *, instance: str = ""
) -> dict[str, Any]:
    return videojob_manifest(job.id, job.did, storage.source_ref(job.id), namespace,
                             instance=instance)


#: Seconds for one API request: the API server is local to the cluster.
REQUEST_TIMEOUT = 15
#: Kept-alive connections to the API server: the operator makes up to 32 Job creations at
#: once plus status patches, events and pod lists from its other threads.
POOL_SIZE = 64


class KubeError(Exception):
    pass


class Gone(Exception):
    """A watch's resourceVersion is too old (410 Gone): list again."""


def load_api_client() -> Any:
    """In-cluster config when running in a pod, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)
    except config.ConfigException:
        try:
            # Read KUBECONFIG now: the library's default is captured when it is imported.
            path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
            config.load_kube_config(config_file=path, client_configuration=cfg)
        except Exception as exc:  # the loader raises several unrelated types
            raise KubeError(f"no Kubernetes configuration: {exc}") from None
    # One kept-alive connection per concurrent call: the default (5 per cpu) made a burst of
    # Job creations open and discard connections, a TLS handshake each.
    cfg.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(cfg)


def _json(resp: Any) -> Any:
    return json.loads(resp.data) if resp.data else {}


class KubeAPI(Protocol):
    """What the reconcilers need from the API server (a fake implements it in unit tests)."""

    def create_videojob(self, namespace: str, body: dict[str, Any]) -> bool: ...

    def list_videojobs(self, namespace: str, selector: str = "") -> list[dict[str, Any]]: ...

    def create_or_get_job(
        self, namespace: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]: ...

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def delete_job(self, namespace: str, name: str) -> None: ...

    def delete_videojob(self, namespace: str, name: str) -> None: ...


P = ParamSpec("P")
R = TypeVar("R")


def _counted(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Count a call that fails (atproto_video_kube_api_errors_total); answers a method
    handles itself (409 on create, 404 on delete) are outcomes, not errors."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except ApiException as exc:
                metrics.kube_error(operation, exc.status)
                raise
            except (HTTPError, OSError):
                metrics.kube_error(operation, None)
                raise

        return call

    return wrap


class Kube:
    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def from_environment(cls) -> Kube:
        return cls(load_api_client())

    def close(self) -> None:
        self.api_client.close()

    # -- VideoJobs --------------------------------------------------------------------------

    @_counted("create_videojob")
    def create_videojob(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create it; False (not an error) if it already exists."""
        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    @_counted("delete_videojob")
    def delete_videojob(self, namespace: str, name: str) -> None:
        """Delete it (its finalizer then runs); gone already is fine."""
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise

    @_counted("list_videojobs")
    def list_videojobs(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        resp = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, label_selector=selector, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        items: list[dict[str, Any]] = _json(resp).get("items", [])
        return items

    @_counted("patch_videojob_status")
    def patch_videojob_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge ``status`` into the status subresource; the object as stored, None if gone."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        code, body = self._request("PATCH", path, {"status": status},
                                   content_type="application/merge-patch+json")
        if code == 404:
            return None
        _raise_for(code, body)
        result: dict[str, Any] = body
        return result

    @_counted("post_event")
    def post_event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A Kubernetes Event on ``obj`` (for ``kubectl describe``), as kopf posts them."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": "atproto-video-", "namespace": namespace},
            "involvedObject": {"apiVersion": obj.get("apiVersion") or API_VERSION,
                               "kind": obj.get("kind") or KIND, "name": meta.get("name"),
                               "namespace": namespace, "uid": meta.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": "atproto-video-operator"},
            "reportingComponent": "atproto-video-operator", "reportingInstance": "",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        code, body = self._request("POST", f"/api/v1/namespaces/{namespace}/events", event)
        _raise_for(code, body)

    # -- worker Jobs and their pods -----------------------------------------------------------

    @_counted("create_job")
    def create_or_get_job(
        self, namespace: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """The Job named in ``body``: created now (True) or the existing one (False)."""
        name = body["metadata"]["name"]
        path = f"/apis/batch/v1/namespaces/{namespace}/jobs"
        status, created = self._request("POST", path, body)
        if status != 409:
            _raise_for(status, created)
            return created, True
        status, existing = self._request("GET", f"{path}/{name}")
        _raise_for(status, existing)
        return existing, False

    def _request(self, method: str, path: str, body: Any = None, *,
                 content_type: str = "application/json") -> tuple[int, Any]:
        """One JSON request through the client's connection pool and credentials, without the
        generated models: their validation and serialisation cost about 6 ms of CPU per Job
        created, most of the operator's work on a burst of uploads (measured with py-spy)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        self.api_client.update_params_for_auth(headers, [], ["BearerToken"])
        try:
            resp = self.api_client.rest_client.request(
                method, self.api_client.configuration.host + path, headers=headers, body=body,
                _request_timeout=REQUEST_TIMEOUT,
            )
            status, raw = resp.status, resp.data
        except ApiException as exc:  # any answer outside 2xx
            if exc.status is None or exc.status == 0:
                raise
            status, raw = exc.status, exc.body
        if isinstance(raw, str):
            raw = raw.encode()
        try:
            return int(status), json.loads(raw) if raw else {}
        except ValueError:
            return int(status), {"message": bytes(raw)[:200].decode(errors="replace")}

    @_counted("list_jobs")
    def list_jobs_versioned(
        self, namespace: str, selector: str
    ) -> tuple[list[dict[str, Any]], str]:
        """The Jobs matching ``selector`` and the list's resourceVersion (to watch from)."""
        query = urlencode({"labelSelector": selector})
        status, body = self._request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs?{query}")
        _raise_for(status, body)
        items: list[dict[str, Any]] = body.get("items") or []
        return items, str((body.get("metadata") or {}).get("resourceVersion") or "")

    def watch_jobs(
        self, namespace: str, selector: str, resource_version: str, *, timeout_s: int,
        opened: Callable[[Any], None] | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """The watch events after ``resource_version`` as the API server sends them (plain
        dicts, ``{"type", "object"}``), a list per chunk received; ends when the server ends
        the stream (after ``timeout_s``). Raises :class:`Gone` on 410. ``opened`` gets the
        response, whose ``shutdown()`` ends the stream from another thread."""
        query = urlencode({"labelSelector": selector, "watch": "true",
                           "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                           "timeoutSeconds": str(timeout_s)})
        url = f"{self.api_client.configuration.host}/apis/batch/v1/namespaces/{namespace}/jobs"
        headers = {"Accept": "application/json"}
        self.api_client.update_params_for_auth(headers, [], ["BearerToken"])
        resp = self.api_client.rest_client.pool_manager.request(
            "GET", f"{url}?{query}", headers=headers, preload_content=False,
            timeout=urllib3.Timeout(connect=10, read=timeout_s + 30))
        complete = False
        try:
            if opened is not None:
                opened(resp)
            if resp.status == 410:
                raise Gone(resource_version)
            if resp.status != 200:
                metrics.kube_error("watch_jobs", resp.status)
                raise ApiException(status=resp.status, reason=resp.data[:300].decode(
                    errors="replace"))
            rest = b""
            for chunk in resp.stream(None, decode_content=False):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                events = [json.loads(line) for line in lines if line.strip()]
                for event in events:
                    if event.get("type") == "ERROR":
                        code = (event.get("object") or {}).get("code")
                        if code == 410:
                            raise Gone(resource_version)
                        raise ApiException(status=code, reason=str(event.get("object"))[:300])
                if events:
                    yield events
            complete = True
        finally:
            if complete:
                resp.release_conn()
            else:  # a half-read stream must not go back to the pool
                resp.close()

    @_counted("list_jobs")
    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp = self.batch.list_namespaced_job(
            namespace, label_selector=selector, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        items: list[dict[str, Any]] = _json(resp).get("items", [])
        return items

    @_counted("list_pods")
    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        items: list[dict[str, Any]] = _json(resp).get("items", [])
        return items

    @_counted("delete_job")
    def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; gone already is fine."""
        try:
            self.batch.delete_namespaced_job(
                name, namespace, propagation_policy="Background",
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def _raise_for(status: int, data: Any) -> None:
    """An error status as the generated client reports it (ApiException with the status)."""
    if not 200 <= status < 300:
        message = data.get("message", "") if isinstance(data, dict) else ""
        raise ApiException(status=status, reason=str(message)[:300])

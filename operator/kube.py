"""A small, blocking Kubernetes client for the few calls we make, returning plain dicts.

Plain JSON dicts (not the generated model classes) so that the pure functions in
:mod:`failures`, :mod:`status` and :mod:`templates` see exactly what the API server sent.
Call these from a thread (``asyncio.to_thread``) in async code.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from atproto_video.operator.crd import GROUP, PLURAL, VERSION

log = logging.getLogger(__name__)

#: Seconds for one API request: the API server is local to the cluster.
REQUEST_TIMEOUT = 15
#: Kept-alive connections to the API server (the operator makes up to 32 calls at once).
POOL_SIZE = 32


class KubeError(Exception):
    pass


def load_api_client() -> Any:
    """In-cluster config when running in a pod, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    cfg = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        try:
            # Read KUBECONFIG now: the library's default is captured when it is imported.
            path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
            config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
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

    def list_videojobs(self, namespace: str) -> list[dict[str, Any]]: ...

    def create_or_get_job(
        self, namespace: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bool]: ...

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def delete_job(self, namespace: str, name: str) -> None: ...


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

    def list_videojobs(self, namespace: str) -> list[dict[str, Any]]:
        resp = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        items: list[dict[str, Any]] = _json(resp).get("items", [])
        return items

    # -- worker Jobs and their pods -----------------------------------------------------------

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

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One JSON request through the client's connection pool and credentials, without the
        generated models: their validation and serialisation cost about 6 ms of CPU per Job
        created, most of the operator's work on a burst of uploads (measured with py-spy)."""
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        self.api_client.update_params_for_auth(headers, [], ["BearerToken"], path, method, body)
        resp = self.api_client.rest_client.request(
            method, self.api_client.configuration.host + path, headers=headers, body=body,
            _request_timeout=REQUEST_TIMEOUT,
        )
        raw = resp.read()
        try:
            return resp.status, json.loads(raw) if raw else {}
        except ValueError:
            return resp.status, {"message": raw[:200].decode(errors="replace")}

    def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp = self.batch.list_namespaced_job(
            namespace, label_selector=selector, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        items: list[dict[str, Any]] = _json(resp).get("items", [])
        return items

    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        resp = self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False,
            _request_timeout=REQUEST_TIMEOUT,
        )
        items: list[dict[str, Any]] = _json(resp).get("items", [])
        return items

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

"""``atproto-video operator --drain``: the chart's pre-delete hook.

``helm uninstall`` removes the operator, and VideoJobs are not chart resources: left alone
they would stay behind, their finalizer never removed. The hook runs while the operator
still does: it deletes this release's VideoJobs, lets the operator's finalizer handle each
(outputs of completed jobs stay, unfinished jobs end FAILED), and waits. If the operator
cannot finish in time, it removes the finalizers itself so the uninstall never hangs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from atproto_video.core.kube import GROUP, LABEL_INSTANCE, PLURAL, REQUEST_TIMEOUT, VERSION, Kube

log = logging.getLogger(__name__)


def drain(kube: Kube, namespace: str, instance: str, *, timeout_s: float = 120.0,
          interval_s: float = 1.0) -> int:
    """Delete the release's VideoJobs and wait for them to go; the number deleted."""
    selector = f"{LABEL_INSTANCE}={instance}" if instance else ""

    def remaining() -> list[dict[str, Any]]:
        return kube.list_videojobs(namespace, selector)

    names = [vj["metadata"]["name"] for vj in remaining()]
    for name in names:
        kube.delete_videojob(namespace, name)
    deadline = time.monotonic() + timeout_s
    while (left := remaining()) and time.monotonic() < deadline:
        time.sleep(interval_s)
    for vj in left:  # the operator did not finish: never leave the uninstall hanging
        name = vj["metadata"]["name"]
        log.warning("removing the finalizer of VideoJob %s by hand", name)
        try:
            kube.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"finalizers": None}},
                _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise
    return len(names)

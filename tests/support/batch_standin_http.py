"""The stand-in's HTTP side: its transport and responses, the routes it serves, error bodies, the shared key check.

Only these operations are served (the ones ``sensorflow.batch_jobs.azure_batch*`` calls);
the names are the REST API's operation ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Self
from urllib.parse import SplitResult, parse_qs

from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpResponse
from azure.core.utils import case_insensitive_dict

__all__ = ["ROUTES", "StandInResponse", "StandInTransport", "error_body", "signature"]

_JOB = r"/jobs/(?P<job>[^/]+)"
ROUTES = [
    (method, re.compile(f"^{pattern}$"), operation, handler)
    for method, pattern, operation, handler in [
        ("GET", r"/pools/(?P<pool>[^/]+)", "Pool_Get", "get_pool"),
        ("POST", r"/pools", "Pool_Add", "add_pool"),
        ("POST", r"/pools/(?P<pool>[^/]+)/enableautoscale", "Pool_EnableAutoScale", "enable_autoscale"),
        ("POST", r"/jobs", "Job_Add", "add_job"),
        ("GET", r"/jobs", "Job_List", "list_jobs"),
        ("GET", _JOB, "Job_Get", "get_job"),
        ("DELETE", _JOB, "Job_Delete", "delete_job"),
        ("POST", _JOB + "/terminate", "Job_Terminate", "terminate_job"),
        ("POST", _JOB + "/addtaskcollection", "Task_AddCollection", "add_tasks"),
        ("GET", _JOB + "/tasks", "Task_List", "list_tasks"),
    ]
]

# Headers in the string to sign, in order (Batch's shared key scheme).
_SIGNED = ("content-encoding", "content-language", "content-length", "content-md5", "content-type", "date",
           "if-modified-since", "if-match", "if-none-match", "if-unmodified-since", "range")


def error_body(code: str, message: str) -> dict:
    """A Batch error response body."""
    return {"code": code, "message": {"lang": "en-US", "value": message}}


def signature(account: str, key: str, method: str, headers: Mapping[str, str], url: SplitResult) -> str:
    """The shared key signature of a request: HMAC-SHA256 with the account key over its canonical form.

    Canonical form as the azure-batch client builds it (the form the live
    service accepts): the verb, the standard headers above (a request with a
    body method and no Content-Length signs "0"), the ``ocp-*`` headers
    sorted, ``/account/path`` and the query parameters sorted by name.
    """
    present = {k.lower(): v for k, v in headers.items() if v}
    if method not in ("GET", "HEAD"):
        present.setdefault("content-length", "0")
    lines = [method, *(present.get(name, "") for name in _SIGNED)]
    text = "\n".join(lines) + "\n"
    text += "".join(f"{name}:{value}\n" for name, value in sorted(present.items()) if "ocp-" in name)
    text += f"/{account}{url.path}"
    query = parse_qs(url.query)
    text += "".join(f"\n{name}:{query[name][0]}" for name in sorted(query) if query[name][0])
    digest = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class StandInResponse(HttpResponse):
    """A complete, already-read response (the azure-core ``rest`` protocol)."""

    def __init__(self, request: Any, status: int, body: bytes, headers: dict[str, str]):
        self._request, self._status, self._content = request, status, body
        self._headers = case_insensitive_dict(headers)
        self._closed = False

    request = property(lambda self: self._request)
    status_code = property(lambda self: self._status)
    headers = property(lambda self: self._headers)
    reason = property(lambda self: "OK" if self._status < 400 else "Error")
    content_type = property(lambda self: self._headers.get("Content-Type"))
    is_closed = property(lambda self: self._closed)
    is_stream_consumed = property(lambda self: True)
    encoding = property(lambda self: "utf-8")
    url = property(lambda self: self._request.url)
    content = property(lambda self: self._content)

    def text(self, encoding: str | None = None) -> str:
        return self._content.decode(encoding or "utf-8")

    def json(self) -> Any:
        return json.loads(self._content)

    def raise_for_status(self) -> None:
        if self._status >= 400:
            from azure.core.exceptions import HttpResponseError

            raise HttpResponseError(response=self)

    def read(self) -> bytes:
        return self._content

    def iter_raw(self, **kwargs: Any) -> Iterator[bytes]:
        yield self._content

    def iter_bytes(self, **kwargs: Any) -> Iterator[bytes]:
        yield self._content

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()


class StandInTransport(HttpTransport):
    """An azure-core transport that hands each request to ``service.handle`` instead of the network."""

    def __init__(self, service: Any):
        self.service = service

    def send(self, request: Any, **kwargs: Any) -> StandInResponse:
        return self.service.handle(request)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *args: object) -> None:
        pass

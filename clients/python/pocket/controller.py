"""The controller's HTTP/JSON API (docs/controller.md) through urllib, with the cluster token as a bearer token."""

import json
import urllib.error
import urllib.request

from . import _config
from .client import Client, Job
from .errors import (ControllerBadRequest, ControllerCapacityExceeded, ControllerError, ControllerNotFound,
                     ControllerUnauthorized)


class Controller:
    """The cluster's admin surface: registers and deregisters jobs, shows the cluster.

    ``url`` defaults to $POCKET_CONTROLLER, else the controller of the cluster `pocket up` runs
    ($POCKET_HOME/cluster.json); ``token`` (the cluster token) to $POCKET_CLUSTER_TOKEN, else that file's.
    """

    def __init__(self, url=None, token=None, timeout=120.0):
        url = url or _config.controller_url()
        if not url:
            raise ValueError("no controller: pass its URL, or set $%s" % _config.CONTROLLER_VARIABLE)
        if "://" not in url:
            url = "http://" + url
        self.url = url.rstrip("/")
        self.token = token if token is not None else _config.cluster_token()
        self.timeout = timeout

    def _request(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            message, field = None, None
            try:
                problem = json.loads(raw)
                message, field = problem.get("error"), problem.get("field")
            except (ValueError, AttributeError):
                pass
            message = message or (raw.decode("utf-8", "replace").strip() or e.reason)
            cls = {400: ControllerBadRequest, 401: ControllerUnauthorized, 404: ControllerNotFound,
                   422: ControllerCapacityExceeded}.get(e.code, ControllerError)
            raise cls("controller %s %s: %s (HTTP %d)" % (method, path, message, e.code), e.code, field) from None
        except urllib.error.URLError as e:
            raise ControllerError("controller %s unreachable: %s" % (self.url, e.reason)) from None
        return json.loads(text) if text else None

    def register_job(self, name, functions=None, throughput=None, capacity=None, latency_sensitive=None,
                     max_capacity=None, max_objects=None, max_key_bytes=None, lease=None, **client_options):
        """Registers a job and opens it. Hints are optional: ``functions`` (concurrent functions), ``throughput``
        (bits/s, or text such as "2Gbps"), ``capacity`` (bytes, or text such as "10GiB"), ``latency_sensitive``
        (default true: DRAM). Limits are optional too (0: no limit; not given: derived from the sizing):
        ``max_capacity`` (bytes or "512MB"), ``max_objects``, ``max_key_bytes`` (bytes or "16MiB"); past one a request
        raises QuotaExceeded. ``lease``: how long the job may go without a request before the controller reclaims it
        (seconds, or text such as "1h"; default the controller's, 5 minutes). Returns a Job (with ``registration``, the controller's answer with its ``quota``, and
        ``token``)."""
        body = {"name": name}
        if functions is not None:
            body["functions"] = functions
        if throughput is not None:
            body["peakThroughput"] = throughput
        if capacity is not None:
            body["capacity"] = capacity
        if latency_sensitive is not None:
            body["latencySensitive"] = bool(latency_sensitive)
        if max_capacity is not None:
            body["maxCapacity"] = max_capacity
        if max_objects is not None:
            body["maxObjects"] = max_objects
        if max_key_bytes is not None:
            body["maxKeyBytes"] = max_key_bytes
        if lease is not None:
            body["lease"] = lease
        reg = self._request("POST", "/v1/jobs", body)
        client = Client(reg["metadata"], **client_options)
        return Job(client, reg["jobId"], reg["token"], owns_client=True, registration=reg, controller=self)

    def deregister(self, job_id):
        """Ends a job: every byte it holds is freed. Returns {jobId, objectsFreed, bytesFreed}."""
        return self._request("DELETE", "/v1/jobs/" + urllib.request.quote(job_id, safe=""))

    def jobs(self):
        return self._request("GET", "/v1/jobs")

    def job(self, job_id):
        """One job with its usage (objects, bytes, requests, GB-seconds)."""
        return self._request("GET", "/v1/jobs/" + urllib.request.quote(job_id, safe=""))

    def cluster(self):
        return self._request("GET", "/v1/cluster")

    def events(self, limit=100):
        return self._request("GET", "/v1/events?limit=%d" % limit)

    def health(self):
        try:
            return self._request("GET", "/healthz")
        except ControllerError as e:
            if e.http_status == 503:
                return {"status": "unhealthy", "error": str(e)}
            raise

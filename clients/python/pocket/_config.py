"""Where the client finds the cluster: environment variables first, then the file `pocket up` writes."""

import json
import os

CONTROLLER_VARIABLE = "POCKET_CONTROLLER"
CLUSTER_TOKEN_VARIABLE = "POCKET_CLUSTER_TOKEN"
METADATA_VARIABLE = "POCKET_METADATA"
JOB_TOKEN_VARIABLE = "POCKET_JOB_TOKEN"
HOME_VARIABLE = "POCKET_HOME"


def home():
    return os.environ.get(HOME_VARIABLE) or os.path.join(os.path.expanduser("~"), ".pocket")


def _read_json(name):
    try:
        with open(os.path.join(home(), name), "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cluster_file():
    """$POCKET_HOME/cluster.json of a running `pocket up` (metadata, controller, clusterToken), or None."""
    return _read_json("cluster.json")


def _setting(variable, key):
    """$variable, else ``key`` of the cluster `pocket up` runs, else None."""
    value = os.environ.get(variable)
    if value:
        return value
    cluster = cluster_file()
    return cluster.get(key) if cluster else None


def controller_url():
    """$POCKET_CONTROLLER, else the controller of the cluster `pocket up` runs, else None."""
    return _setting(CONTROLLER_VARIABLE, "controller")


def cluster_token():
    """$POCKET_CLUSTER_TOKEN, else the token of the cluster `pocket up` runs, else None."""
    return _setting(CLUSTER_TOKEN_VARIABLE, "clusterToken")


def metadata_address():
    """$POCKET_METADATA, else the metadata server of the cluster `pocket up` runs, else None."""
    return _setting(METADATA_VARIABLE, "metadata")


def job_from_home(job_id):
    """The token and metadata address the `pocket` CLI stored for a job it registered ($POCKET_HOME/jobs.json)."""
    jobs = _read_json("jobs.json")
    if isinstance(jobs, dict):
        jobs = jobs.get("jobs", jobs)
    if isinstance(jobs, dict):
        entry = jobs.get(job_id)
        if isinstance(entry, dict):
            return entry
    if isinstance(jobs, list):
        for entry in jobs:
            if isinstance(entry, dict) and entry.get("id") == job_id:
                return entry
    return None


def job_token(job_id):
    """$POCKET_JOB_TOKEN, else the token `pocket job register` stored for the job, else None."""
    token = os.environ.get(JOB_TOKEN_VARIABLE)
    if token:
        return token
    stored = job_from_home(job_id)
    return stored.get("token") if stored else None


def split_address(address):
    """'host:port' (or '[v6]:port') as (host, port)."""
    text = address.strip()
    if text.startswith("tcp://"):
        text = text[6:]
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("expected host:port, got %r" % address)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)

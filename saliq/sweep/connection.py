"""The sweep's Ray: joining a cluster or starting a local one, checked before anything is
written, and refusing trials that no node can ever run."""

from __future__ import annotations

import logging
import os
import socket

import ray

from saliq.data.sources import locate
from saliq.errors import ConfigError, DataNotFound, SaliqError
from saliq.sweep.spec import ResourcesSpec, Sweep

__all__ = ["DATA_ROOT_IN_SPEC", "ResourcesUnavailable", "check_ray_side", "check_resources",
           "init_ray", "starts_local_ray"]

log = logging.getLogger("saliq")

_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
DATA_ROOT_IN_SPEC = "a sweep spec gives --data-root as trial.data_root"


def starts_local_ray(address: str | None) -> bool:
    return not (ray.is_initialized() or address or os.environ.get("RAY_ADDRESS"))


def _check_ray_address(address: str | None) -> None:
    """An unreachable cluster, said in seconds: Ray's own connect retries for minutes."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address in ("auto", "local"):
        return  # auto: the cluster this machine started, found by Ray itself
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        host, port = address.removeprefix("ray://"), "6379"  # Ray's default GCS port
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise SaliqError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}): check "
                         "--address / RAY_ADDRESS and that `ray status` works there") from None


def check_ray_side(sweep: Sweep, address: str | None) -> None:
    """Before anything is written: the cluster reachable, and on this machine's own Ray the
    datasets here (a cluster's nodes may hold data this machine lacks)."""
    _check_ray_address(address)
    if not starts_local_ray(address):
        return
    for variant in sweep.recipe_variants():
        try:
            locate(variant.dataset, variant.data_root)
        except DataNotFound as e:
            raise DataNotFound(f"{e} ({DATA_ROOT_IN_SPEC})") from None


def init_ray(address: str | None, dashboard: bool) -> bool:
    """Connect to the cluster at `address` (or RAY_ADDRESS), else start a local Ray: True for
    a local Ray started here (a fixed set of resources: no autoscaler adds any)."""
    local = starts_local_ray(address)
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            # A local Ray of its own ("local": without an address Ray joins the cluster that
            # another process's `ray start` left on this machine); no dashboard unless asked
            # for, and then on 127.0.0.1 only. Ray 2.60 has no loopback-only mode for its GCS
            # and raylet ports (it resolves 127.0.0.1 to the machine's address); they require
            # its auth token, which it enables by default (and warns about at every start: the
            # README's Security section says it once).
            logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
            ray.init(address="local", include_dashboard=dashboard,
                     dashboard_host="127.0.0.1", log_to_driver=False,
                     logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as e:
        reason = str(e).splitlines()[0]
        if local:
            raise SaliqError(f"cannot start a local Ray ({reason}): see `ray status`, and "
                             "/tmp/ray/session_latest/logs for why") from None
        raise SaliqError(f"cannot reach the Ray cluster at {address} ({reason}): check "
                         "--address / RAY_ADDRESS and that `ray status` works there") from None
    return local


class ResourcesUnavailable(ConfigError):
    """No node of the local Ray can ever run a trial of this sweep."""


def check_resources(resources: ResourcesSpec, local: bool) -> None:
    """A trial that asks for more than any node has waits forever: on the local Ray, say so
    now; on a cluster, warn (an autoscaler may still add such a node)."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    if any(n.get("CPU", 0) >= resources.cpu and n.get("GPU", 0) >= resources.gpu for n in nodes):
        return
    have = "; ".join(sorted({f"{n.get('CPU', 0):g} CPU, {n.get('GPU', 0):g} GPU" for n in nodes}))
    if local:
        raise ResourcesUnavailable(
            f"resources: a trial asks for {resources.describe()}, more than this machine's "
            f"local Ray has ({have}): lower resources.cpu / resources.gpu in the sweep spec, "
            "or run the sweep on a cluster that has them (--address)")
    log.warning("no node of the Ray cluster has %s for a trial (nodes: %s): the trials wait "
                "until an autoscaler adds one; lower resources.cpu / resources.gpu otherwise",
                resources.describe(), have)

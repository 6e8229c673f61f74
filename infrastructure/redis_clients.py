"""Redis clients from `WIDGETS_REDIS_URL`: one Redis (`redis://`, `rediss://`) or a Redis Cluster
(`redis+cluster://host:port[,host:port...]`, `rediss+cluster://` for TLS).

redis-py's cluster clients take startup nodes, not such a URL (`RedisCluster.from_url` takes one
`redis://` address), so the URL is split here. Every caller builds its clients through these
functions, so that a cluster URL reaches every feature.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The startup nodes of a cluster URL, and its credentials and TLS as client options."""
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a Redis Cluster URL: {parts.scheme}://")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for address in filter(None, (a.strip() for a in hosts.split(","))):
        if address.startswith("["):  # [IPv6]:port
            host, _, port = address[1:].partition("]")
            port = port.lstrip(":")
        else:
            host, _, port = address.partition(":")
        try:
            nodes.append((host or "127.0.0.1", int(port or 6379)))
        except ValueError:
            raise SystemExit(f"WIDGETS_REDIS_URL: {address!r} is not host:port") from None
    if not nodes:
        raise SystemExit("WIDGETS_REDIS_URL names no cluster node (redis+cluster://host:port[,host:port...])")
    options: dict[str, Any] = {}
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    if parts.scheme == "rediss+cluster":
        options["ssl"] = True
    return nodes, options


def sync_client(url: str, **options: Any) -> redis.Redis | RedisCluster:
    if not is_cluster(url):
        return redis.Redis.from_url(url, **options)
    nodes, extra = cluster_nodes(url)
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in nodes], **extra, **options)


def async_client(url: str, **options: Any) -> aioredis.Redis | AsyncRedisCluster:
    if not is_cluster(url):
        return aioredis.Redis.from_url(url, **options)
    nodes, extra = cluster_nodes(url)
    return AsyncRedisCluster(startup_nodes=[AsyncClusterNode(h, p) for h, p in nodes], **extra, **options)


def limits_storage_url(url: str) -> tuple[str, dict[str, Any]]:
    """The URL and options the `limits` package takes for the same Redis (`async+redis+cluster://` for a cluster)."""
    if not is_cluster(url):
        return "async+" + url, {}
    parts = urlsplit(url)
    options = {"ssl": True} if parts.scheme == "rediss+cluster" else {}
    return "async+redis+cluster://" + parts.netloc, options


def queue_script(pipe: Any, script: str, keys: list[str], args: list[Any]) -> None:
    """Queue a Lua script on a pipeline, of one Redis or of a Redis Cluster.

    redis-py's `Script` queues EVALSHA, which a cluster pipeline refuses (RedisClusterException: it could not
    load a script missing on the node the keys route to). EVAL carries the script itself and is routed by its
    keys, which must therefore share one hash slot (`{tag}`)."""
    pipe.execute_command("EVAL", script, len(keys), *keys, *args)

"""Session fixtures shared by every test level: private Redis servers, started on first use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_servers import (
    RedisCluster,
    RedisProcess,
    start_cluster,
    start_standalone,
    start_tls,
)

pytest_plugins = ["tests.support.agent_fixtures"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = start_standalone(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisProcess) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    return redis_cluster.url


@pytest.fixture(scope="session")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = start_tls(tmp_path_factory.mktemp("redis-tls"))
    yield server
    server.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Keep the fast unit tests first so a broken rule fails in seconds.
    items.sort(key=lambda item: 0 if "/unit/" in str(item.fspath) else 1)

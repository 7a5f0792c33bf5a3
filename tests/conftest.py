"""Session fixtures shared by every test level: private Redis servers, started on first use;
and one seed per run for every property-based test, printed so a failure can be replayed."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.support.redis_servers import (
    RedisCluster,
    RedisProcess,
    start_cluster,
    start_standalone,
    start_tls,
)

pytest_plugins = ["tests.support.agent_fixtures", "tests.support.archive_table",
                  "tests.support.archive_harness"]


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


# No example database: a failure found once must not replay forever from `.hypothesis/` in a
# clone. Each run draws from one printed seed instead; `TEST_SEED=<n>` replays a run.
# No deadline either: an example slowed by a busy machine would be reported as flaky timing,
# and speed is the benchmarks' business (bench/), never a test's.
settings.register_profile("orchestrator-flows", database=None, print_blob=True, deadline=None)
settings.load_profile("orchestrator-flows")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # Before Hypothesis' own hook reads --hypothesis-seed; schemathesis takes the same seed.
    from schemathesis.config import SchemathesisConfig

    seed = config.getoption("hypothesis_seed") or os.environ.get("TEST_SEED")
    seed = int(seed) if seed is not None else random.SystemRandom().randrange(2**32)
    config.option.hypothesis_seed = seed
    SchemathesisConfig.shared_seed = seed
    config.stash[SEED] = seed


SEED = pytest.StashKey[int]()


def pytest_report_header(config: pytest.Config) -> str:
    return f"property-based tests seeded with {config.stash[SEED]}: replay with TEST_SEED=" \
        f"{config.stash[SEED]} (or --hypothesis-seed={config.stash[SEED]})"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if terminalreporter.stats.get("failed") or terminalreporter.stats.get("error"):
        seed = terminalreporter.config.stash[SEED]
        terminalreporter.write_line(f"property-based tests were seeded with {seed}: "
                                    f"TEST_SEED={seed} replays them")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Keep the fast unit tests first so a broken rule fails in seconds.
    items.sort(key=lambda item: 0 if "/unit/" in str(item.fspath) else 1)

"""Shared fixtures: every ``@pytest.mark.anyio`` test runs on asyncio, uvloop and trio.

The ``anyio_backend`` fixture is session-scoped (hypothesis' health check
rejects function-scoped fixtures on ``@given`` async tests).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BACKENDS: list[Any] = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=BACKENDS, scope="session")
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(scope="session")
def backend_name(anyio_backend: Any) -> str:
    """'asyncio', 'uvloop' or 'trio' (for subprocess-based tests)."""
    name, options = anyio_backend
    return "uvloop" if options.get("use_uvloop") else name

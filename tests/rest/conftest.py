"""The REST and Bundle suites are part of the storage contract: they run on every backend."""

import pytest

from tests.backends import BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)

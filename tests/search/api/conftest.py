"""The HTTP-level search tests (R4 search.html): their helpers are in search_helpers.py.

Each test seeds a small, known set of resources with fixed ids (PUT), then searches
over HTTP and compares the exact set of ids matched.
"""

import pytest

from tests.backends import BACKENDS

# The helpers assert too: have pytest explain their failures as it does the tests'.
pytest.register_assert_rewrite("tests.search.api.search_helpers")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Search is part of the storage contract: every test runs on every backend."""
    return str(request.param)

"""pytest's set-up for every test of bmi-rpc: the shared fixtures (testkit/fixtures.py), with their
assertions rewritten, and the "fast" mark of the tests that need neither root nor daemons."""
import pytest

pytest.register_assert_rewrite("testkit")
pytest_plugins = ["testkit.fixtures"]


def pytest_configure(config):
    config.addinivalue_line("markers", "fast: needs neither root nor daemons; runs in seconds")


def pytest_collection_modifyitems(items):
    """Everything in tests/fast is of the fast tier."""
    for item in items:
        if "tests/fast/" in item.nodeid:
            item.add_marker(pytest.mark.fast)

"""pytest's set-up for every test of bmi-rpc: the shared fixtures (testkit/fixtures.py), with their
assertions rewritten, and the tiers: each test is of one, by its mark (tools/run-tests runs them in
this order)."""
import pytest

pytest.register_assert_rewrite("testkit")
pytest_plugins = ["testkit.fixtures"]

TIERS = {"fast": "needs neither root nor daemons; runs in seconds (everything in tests/fast)",
         "service": "starts real daemons (tgtd, Ceph, dnsmasq, the servers): every test that is neither fast nor boot",
         "boot": "boots virtual machines (marked so where they are defined)"}


def pytest_configure(config):
    for tier, meaning in TIERS.items():
        config.addinivalue_line("markers", "%s: %s" % (tier, meaning))


def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("boot"):
            continue
        item.add_marker(pytest.mark.fast if "tests/fast/" in item.nodeid else pytest.mark.service)

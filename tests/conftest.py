import pytest

# the fixtures module holds assertions too: have pytest rewrite them before any test file imports it
pytest.register_assert_rewrite("tests.fixtures")

"""Shared pytest plugins: Azurite, started by the tests themselves (``tests/azurite.py``)."""

pytest_plugins = ["tests.azurite"]

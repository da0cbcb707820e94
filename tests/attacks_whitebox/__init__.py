"""White-box attack tests (a package, so the tests can import helpers from its conftest)."""

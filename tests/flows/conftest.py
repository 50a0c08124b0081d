import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """One temporary Prefect server and database for the flow tests, stopped while pytest still captures logs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield

"""Fixtures for the real-port tests: one private JACK server (dummy driver) for the whole session."""
import pytest

from daemon.jackrig import JackServer


@pytest.fixture(scope="session")
def jack():
    server = JackServer().start()  # a missing jackd fails here: `make test` installs it
    yield server
    server.stop()

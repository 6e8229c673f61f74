"""`widgets serve` never exposes the development admin-token secret beyond this machine."""

import click
import pytest

from api.cli import refuse_development_secret_off_loopback
from infrastructure.settings import Settings


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "widgets.internal"])
def test_the_development_secret_is_refused_on_any_address_others_can_reach(host: str) -> None:
    with pytest.raises(click.ClickException, match="WIDGETS_AUTH_SECRET"):
        refuse_development_secret_off_loopback(Settings(host=host))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_the_development_secret_is_fine_on_loopback(host: str) -> None:
    refuse_development_secret_off_loopback(Settings(host=host))


def test_a_real_secret_and_data_key_serve_anywhere() -> None:
    refuse_development_secret_off_loopback(Settings(host="0.0.0.0", auth_secret="x" * 40, data_key=REAL_DATA_KEY))


REAL_DATA_KEY = "q5cDmdW3bYcDbmtVFeoAZFHJvSG4jQ8G5Gg1xlo8O0M="


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "widgets.internal"])
def test_the_development_data_key_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(click.ClickException, match="WIDGETS_DATA_KEY"):
        refuse_development_secret_off_loopback(Settings(host=host, auth_secret="x" * 40))


def test_the_development_data_key_is_fine_on_loopback() -> None:
    refuse_development_secret_off_loopback(Settings(host="127.0.0.1", auth_secret="x" * 40))

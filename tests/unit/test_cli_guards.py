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


def test_a_real_secret_serves_anywhere() -> None:
    refuse_development_secret_off_loopback(Settings(host="0.0.0.0", auth_secret="x" * 40))

"""Settings: one place, documented, read from WIDGETS_* variables."""

from pathlib import Path

import pytest

from infrastructure.settings import Settings, documented_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_setting_the_service_reads() -> None:
    text = README.read_text()
    missing = [name for name, _, _ in documented_settings() if f"`{name}`" not in text]
    assert not missing


def test_settings_are_read_from_the_environment_with_their_types(tmp_path: Path) -> None:
    settings = Settings.from_env({"WIDGETS_PORT": "9001", "WIDGETS_PUBLIC_CACHE_TTL": "0.5", "WIDGETS_REDIS_URL": "redis://r:6379/0",
                                  "WIDGETS_DATA_DIR": str(tmp_path)})
    assert (settings.port, settings.public_cache_ttl, settings.redis_url) == (9001, 0.5, "redis://r:6379/0")
    assert not settings.projections_in_process or settings.embedded


def test_a_malformed_number_stops_startup_naming_the_variable() -> None:
    with pytest.raises(SystemExit, match="WIDGETS_PORT"):
        Settings.from_env({"WIDGETS_PORT": "eighty"})


def test_the_embedded_default_needs_no_other_server(tmp_path: Path) -> None:
    settings = Settings.from_env({"WIDGETS_DATA_DIR": str(tmp_path)})
    assert settings.embedded and settings.projections_in_process and not settings.redis_url

"""The settings that switch RadGround's third-party patches reach the code that applies them
(docs/third-party-patches.md)."""

from __future__ import annotations

import pytest

from exporters._highdicom_cache import memoised_iod_lookups_enabled, set_memoised_iod_lookups
from radground.runtime import build_context, configure_celery
from radground.settings import load_settings


@pytest.mark.parametrize("memoise", [False, True])
def test_memoise_highdicom_iod_lookups_setting_reaches_the_exporters(tmp_path, memoise):
    settings = load_settings(
        None,
        database={"url": f"sqlite:///{tmp_path / 'radground.db'}"},
        exporters={"memoise_highdicom_iod_lookups": memoise},
    )
    try:
        context = build_context(settings, enqueue=lambda *args, **kwargs: None)
        assert memoised_iod_lookups_enabled() is memoise
        context.sessions.kw["bind"].dispose()
    finally:
        set_memoised_iod_lookups(True)


@pytest.mark.parametrize(
    ("scheme", "transport"),
    [("radground", "worklist.embedded_broker"), ("sqla", "kombu.transport.sqlalchemy")],
)
def test_broker_url_scheme_picks_the_woken_or_the_stock_transport(tmp_path, scheme, transport):
    settings = load_settings(None, workers={"broker_url": f"{scheme}+sqlite:///{tmp_path / 'b' / 'broker.sqlite'}"})
    app = configure_celery(settings)
    with app.connection_for_write() as connection:
        assert type(connection.transport).__module__ == transport
    assert (tmp_path / "b").is_dir()  # the broker file's folder is made for either scheme


def test_the_stock_sqlite_broker_is_named_in_a_warning(tmp_path, caplog):
    """A config from before the transport had its own name keeps working, and says what it costs."""
    settings = load_settings(None, workers={"broker_url": f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"})
    with caplog.at_level("WARNING", logger="worklist.tasks"):
        configure_celery(settings)
    assert "radground+sqlite:///PATH" in caplog.text

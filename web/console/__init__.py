"""The operator console: server-rendered pages over :mod:`worklist.views`.

Pages (Jinja2 templates, no build step): a dashboard, the studies and jobs tables, a job's page
with its timeline, the source image with the findings' boxes (rendered by
:func:`exporters.sc.render_preview`, the previews' renderer), its artifacts, deliveries and the
operator actions as forms carrying the session's CSRF token. A small plain script
(``static/console.js``) refreshes the live parts of a page while jobs run. Everything is served
by the application itself: no CDN, no Node at run time.
"""

from web.console.routes import install_console, router

__all__ = ["install_console", "router"]

"""RadGround's HTTP surface: REST API, operator console, DICOMweb STOW-RS ingest, health and
Prometheus metrics, with accounts, sessions and API tokens.

An ASGI application (:func:`web.app.create_app`) built from a :class:`web.context.WebContext`
that the application shell (``radground/``) makes from the settings; ``web`` reads no settings
itself. It may import ``worklist``, ``exporters``, ``engine`` and ``dicom_node``, never the reverse.
"""

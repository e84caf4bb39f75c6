"""DICOMweb STOW-RS (PS3.18 §10.5): the node's HTTP ingest, through the same path as C-STORE.

``router`` (:mod:`web.stow.routes`) is mounted by :func:`web.app.create_app`;
:mod:`web.stow.multipart` reads the body as it arrives, :mod:`web.stow.spool`
keeps each part on disk, :mod:`web.stow.response` builds the response data set.
"""

from web.stow.routes import router

__all__ = ["router"]

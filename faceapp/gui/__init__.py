"""PySide6 desktop GUI: camera, workers, pages and the main window.

The only package of faceapp that imports PySide6. It reaches models and the gallery
through :mod:`faceapp.services` only. Entry point: :func:`faceapp.gui.app.run`.
"""

"""PySide6 desktop GUI: camera, workers, pages and the main window.

The only package of faceapp that imports PySide6; it reaches models and the gallery
through :mod:`faceapp.services` only. Entry point: :func:`faceapp.gui.app.run`
(``faceapp gui`` / ``make run``).

Modules, in the order a frame travels:

* ``camera``: frame sources (camera, video file, image folder) -> RGB arrays, at the edge;
* ``workers``: :class:`~faceapp.gui.workers.FrameWorker` (live loop, drops frames while
  busy) and :class:`~faceapp.gui.workers.Task` / ``TaskRunner`` (long jobs);
* ``video_view``: the preview with boxes and labels; ``plots``: histogram and ROC;
* ``context``: what the pages share (service, settings, tasks, messages);
* pages: ``enroll_page``, ``verify_page``, ``recognize_page``, ``people_page``
  (+ ``people_model``), ``calibrate_page``, ``privacy_page``, ``settings_page`` (+ ``settings``);
* ``navigation`` (which pages, in what order), ``main_window``, ``app``.
"""

"""Gallery schema revisions (see :mod:`faceapp.gallery.migrations`)."""

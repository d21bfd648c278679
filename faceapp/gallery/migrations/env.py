"""Alembic environment of the gallery: runs on the connection faceapp hands over.

faceapp calls Alembic from :mod:`faceapp.gallery.migrations` with an open connection in
``config.attributes["connection"]`` (inside faceapp's own transaction); there is no
``alembic.ini`` and no URL here.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()

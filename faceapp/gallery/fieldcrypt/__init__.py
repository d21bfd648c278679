"""Field-level encryption of biometric data with per-person keys (crypto-shredding).

Every template's embedding, face picture and source (a file path, often naming the person)
is sealed on the client with AES-256-GCM
(:func:`faceapp.gallery.crypto.seal`: a random 96-bit nonce per value) under **its person's
data key**, with associated data naming the gallery, the table/column and the row's template
and person ids: a ciphertext copied to another row, person or gallery fails to open. This is
what protects a PostgreSQL gallery from the server's operator (the server stores ciphertext
only), and, on SQLite, sits inside the SQLCipher file.

Keys::

    KEK (OS keyring or passphrase, faceapp.gallery.keys)
     └─ wraps the key file's data key G          (key file, on the client)
         └─ wraps W_e, the field key of epoch e  (key file, "fields" entry)
             └─ wraps each person's key P        (person.key_wrapped on the server / in the file)
                 └─ seals that person's embeddings and face pictures

**Crypto-shredding** (ISO/IEC 24745 revocability): deleting a person deletes their wrapped
key and *ratchets* the field key: ``W_{e+1} = HKDF(W_e)`` (one-way), every remaining person
key is re-wrapped by ``W_{e+1}`` in the same transaction, and the key file then keeps only
``W_{e+1}``. A copy of the database taken before the deletion holds the deleted person's key
wrapped by ``W_e``, which nobody can compute from the current keys any more: their
ciphertext in old backups is unrecoverable. (A copy of the *key file* from before the
deletion would still open it: keep key-file backups apart from database backups.) Desktops
whose key file is behind derive the current key forward by themselves (the database holds the
epoch), and their key file is advanced.

Where the key file is: beside a SQLite gallery (``<db>.keys``, the one that also holds the
SQLCipher key); for a server gallery, on each client, ``$FACEAPP_KEY_DIR/server-<gallery
uuid>.keys`` (default ``~/.local/share/faceapp/keys``): the server never holds a key, nor a
wrap that a passphrase guess could open. A second desktop gets a copy of that file once.

Server-side (pgvector) search needs the vectors in clear: an encrypted gallery is searched
on the client; :func:`faceapp.gallery.server_search.server_search_available` says so.
``FACEAPP_FIELD_ENCRYPTION=off`` (or ``DatabaseConfig(field_encryption=False)``) creates a new
gallery without field encryption, for in-server search.
"""


from faceapp.gallery.fieldcrypt.cipher import (
    CHECK_TEXT,
    CROP,
    EMBEDDING,
    ENV_FIELDS,
    ENV_KEY_DIR,
    FIELD_OPTION,
    ROOT_OPTION,
    SOURCE,
    TEXT_PREFIX,
    FieldCipher,
    KeyStore,
    ShreddedKey,
    fields_wanted,
    key_dir,
    ratchet,
    server_key_base,
)
from faceapp.gallery.fieldcrypt.opening import (
    attach,
    gallery_key_row,
    initialise,
    is_empty,
    is_field_encrypted,
    load_cipher,
)
from faceapp.gallery.fieldcrypt.rows import (
    cipher_of,
    current_epoch,
    new_person_key,
    open_template_fields,
    person_keys,
    shred_person,
)

__all__ = [
    "CHECK_TEXT",
    "CROP",
    "EMBEDDING",
    "ENV_FIELDS",
    "ENV_KEY_DIR",
    "FIELD_OPTION",
    "ROOT_OPTION",
    "SOURCE",
    "TEXT_PREFIX",
    "FieldCipher",
    "KeyStore",
    "ShreddedKey",
    "attach",
    "cipher_of",
    "current_epoch",
    "fields_wanted",
    "gallery_key_row",
    "initialise",
    "is_empty",
    "is_field_encrypted",
    "key_dir",
    "load_cipher",
    "new_person_key",
    "open_template_fields",
    "person_keys",
    "ratchet",
    "server_key_base",
    "shred_person",
]

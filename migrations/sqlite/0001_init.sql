-- Quip's schema, SQLite dialect. Keep in step with ../postgres/0001_init.sql: the queries in
-- storage/src/sql/ run unchanged against both.
--
-- Conventions: timestamps are Unix milliseconds; ids are 16 raw bytes; user names are stored
-- in their canonical lowercase form. STRICT tables refuse a value of the wrong type.

CREATE TABLE users (
    name           TEXT    NOT NULL PRIMARY KEY CHECK (name = lower(name)),
    password_hash  TEXT    NOT NULL,
    encryption_key BLOB    NOT NULL,
    signing_key    BLOB    NOT NULL,
    key_backup     BLOB    NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;
-- Defence in depth: names are unique regardless of case even if a writer forgets to lowercase.
CREATE UNIQUE INDEX users_name_lower ON users (lower(name));

CREATE TABLE sessions (
    token_hash BLOB    NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    user_name  TEXT    NOT NULL REFERENCES users (name),
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE groups (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT    NOT NULL,
    creator    TEXT    NOT NULL REFERENCES users (name),
    epoch      INTEGER NOT NULL CHECK (epoch >= 0),
    created_at INTEGER NOT NULL,
    UNIQUE (creator, name)
) STRICT;

CREATE TABLE group_members (
    group_id  BLOB NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_name TEXT NOT NULL REFERENCES users (name),
    role      TEXT NOT NULL CHECK (role IN ('admin', 'member')),
    PRIMARY KEY (group_id, user_name)
) STRICT;
CREATE INDEX group_members_user ON group_members (user_name);

-- The signed membership chain: epoch 0 is the genesis.
CREATE TABLE group_chain (
    group_id BLOB    NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    epoch    INTEGER NOT NULL CHECK (epoch >= 0),
    signed   BLOB    NOT NULL,
    PRIMARY KEY (group_id, epoch)
) STRICT;

-- One stored copy of each sealed message, however many recipients it has. blob_id has no
-- foreign key: an image may be purged on its own; the message row then just points nowhere.
CREATE TABLE messages (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    sealed     BLOB    NOT NULL,
    blob_id    BLOB,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX messages_blob ON messages (blob_id) WHERE blob_id IS NOT NULL;

-- Per-recipient queues. AUTOINCREMENT: a seq is never reused, even after the newest rows are
-- acknowledged, so a reader's `seq > after` cursor never skips a later message.
CREATE TABLE queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient   TEXT NOT NULL REFERENCES users (name),
    msg_id      BLOB NOT NULL REFERENCES messages (id),
    wrapped_key BLOB NOT NULL,
    UNIQUE (recipient, msg_id)
) STRICT;
CREATE INDEX queue_recipient_seq ON queue (recipient, seq);
CREATE INDEX queue_msg ON queue (msg_id);

-- Encrypted image uploads, appended chunk by chunk.
CREATE TABLE blobs (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    owner      TEXT    NOT NULL REFERENCES users (name),
    chunks     INTEGER NOT NULL CHECK (chunks >= 0),
    len        INTEGER NOT NULL CHECK (len >= 0),
    finished   INTEGER NOT NULL CHECK (finished IN (FALSE, TRUE)),
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX blobs_unfinished ON blobs (created_at) WHERE finished = FALSE;

CREATE TABLE blob_chunks (
    blob_id BLOB    NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    idx     INTEGER NOT NULL CHECK (idx >= 0),
    data    BLOB    NOT NULL,
    PRIMARY KEY (blob_id, idx)
) STRICT;

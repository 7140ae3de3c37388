-- Quip's schema, Postgres dialect. Keep in step with ../sqlite/0001_init.sql: the queries in
-- storage/src/sql/ run unchanged against both.
--
-- Conventions: timestamps are Unix milliseconds; ids are 16 raw bytes; user names are stored
-- in their canonical lowercase form.

CREATE TABLE users (
    name           TEXT   NOT NULL PRIMARY KEY CHECK (name = lower(name)),
    password_hash  TEXT   NOT NULL,
    encryption_key BYTEA  NOT NULL,
    signing_key    BYTEA  NOT NULL,
    key_backup     BYTEA  NOT NULL,
    created_at     BIGINT NOT NULL
);
-- Defence in depth: names are unique regardless of case even if a writer forgets to lowercase.
CREATE UNIQUE INDEX users_name_lower ON users (lower(name));

CREATE TABLE sessions (
    token_hash BYTEA  NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    user_name  TEXT   NOT NULL REFERENCES users (name),
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

CREATE TABLE groups (
    id         BYTEA  NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT   NOT NULL,
    creator    TEXT   NOT NULL REFERENCES users (name),
    epoch      BIGINT NOT NULL CHECK (epoch >= 0),
    created_at BIGINT NOT NULL,
    UNIQUE (creator, name)
);

CREATE TABLE group_members (
    group_id  BYTEA NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    user_name TEXT  NOT NULL REFERENCES users (name),
    role      TEXT  NOT NULL CHECK (role IN ('admin', 'member')),
    PRIMARY KEY (group_id, user_name)
);
CREATE INDEX group_members_user ON group_members (user_name);

-- The signed membership chain: epoch 0 is the genesis.
CREATE TABLE group_chain (
    group_id BYTEA  NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    epoch    BIGINT NOT NULL CHECK (epoch >= 0),
    signed   BYTEA  NOT NULL,
    PRIMARY KEY (group_id, epoch)
);

-- One stored copy of each sealed message, however many recipients it has. blob_id has no
-- foreign key: an image may be purged on its own; the message row then just points nowhere.
CREATE TABLE messages (
    id         BYTEA  NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    sealed     BYTEA  NOT NULL,
    blob_id    BYTEA,
    created_at BIGINT NOT NULL
);
CREATE INDEX messages_blob ON messages (blob_id) WHERE blob_id IS NOT NULL;

-- Per-recipient queues. An identity never reuses a seq. Concurrent enqueues to one recipient
-- are serialised by an advisory lock (see storage/src/postgres.rs), so seq order is commit
-- order per recipient and a reader's `seq > after` cursor never skips a late commit.
CREATE TABLE queue (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient   TEXT   NOT NULL REFERENCES users (name),
    msg_id      BYTEA  NOT NULL REFERENCES messages (id),
    wrapped_key BYTEA  NOT NULL,
    UNIQUE (recipient, msg_id)
);
CREATE INDEX queue_recipient_seq ON queue (recipient, seq);
CREATE INDEX queue_msg ON queue (msg_id);

-- Encrypted image uploads, appended chunk by chunk.
CREATE TABLE blobs (
    id         BYTEA   NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    owner      TEXT    NOT NULL REFERENCES users (name),
    chunks     BIGINT  NOT NULL CHECK (chunks >= 0),
    len        BIGINT  NOT NULL CHECK (len >= 0),
    finished   BOOLEAN NOT NULL,
    created_at BIGINT  NOT NULL
);
CREATE INDEX blobs_unfinished ON blobs (created_at) WHERE finished = FALSE;

CREATE TABLE blob_chunks (
    blob_id BYTEA  NOT NULL REFERENCES blobs (id) ON DELETE CASCADE,
    idx     BIGINT NOT NULL CHECK (idx >= 0),
    data    BYTEA  NOT NULL,
    PRIMARY KEY (blob_id, idx)
);

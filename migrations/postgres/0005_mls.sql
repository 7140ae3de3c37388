-- End-to-end v2 (MLS): devices, their key packages and backed-up state, each group's public
-- state, its log of messages with a cursor per member device, and Welcome messages. Keep in
-- step with ../sqlite/0005_mls.sql. Nothing here replaces a table of 0001–0004: the RSA-era
-- groups and queues stay until the switch.
--
-- A device id is a u64 stored as the i64 with the same bits (so every u64 is a device id; a
-- large one reads as negative here). Children reference their device without ON DELETE
-- CASCADE: `remove_device` deletes them explicitly, and a forgotten table fails loudly.

-- One installation of the client. `credential` is its MLS credential, `signature_key` its
-- MLS signature public key, unique across every device of every user.
CREATE TABLE devices (
    user_name     TEXT   NOT NULL REFERENCES users (name),
    device        BIGINT NOT NULL,
    credential    BYTEA  NOT NULL,
    signature_key BYTEA  NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (user_name, device)
);

-- A device's MLS state, backed up entry by entry, encrypted by the client.
CREATE TABLE device_state (
    user_name TEXT   NOT NULL,
    device    BIGINT NOT NULL,
    entry     BYTEA  NOT NULL,
    value     BYTEA  NOT NULL,
    PRIMARY KEY (user_name, device, entry),
    FOREIGN KEY (user_name, device) REFERENCES devices (user_name, device)
);

-- Key packages waiting to be handed out, oldest first (by id); at most one last-resort
-- package per device, which is handed out without being deleted.
CREATE TABLE key_packages (
    id          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_name   TEXT    NOT NULL,
    device      BIGINT  NOT NULL,
    kp_ref      BYTEA   NOT NULL UNIQUE,
    data        BYTEA   NOT NULL,
    last_resort BOOLEAN NOT NULL,
    created_at  BIGINT  NOT NULL,
    FOREIGN KEY (user_name, device) REFERENCES devices (user_name, device)
);
CREATE INDEX key_packages_device ON key_packages (user_name, device, last_resort, id);
CREATE UNIQUE INDEX key_packages_one_last_resort ON key_packages (user_name, device)
    WHERE last_resort = TRUE;

-- Every key package reference a group change has used: none is used twice.
CREATE TABLE used_key_packages (
    kp_ref  BYTEA  NOT NULL PRIMARY KEY,
    used_at BIGINT NOT NULL
);

-- Each MLS group's public state (ratchet tree, context, transcript hashes: no secrets) and its
-- GroupInfo for external joins. `state_version` is bumped by every proposal or commit: the
-- compare-and-set value of `append_mls`. `last_seq` is the highest seq in the group's log
-- (seqs are never reused, even once pruned), `log_bytes` the bytes of the bodies in it now.
CREATE TABLE mls_groups (
    id            BYTEA   NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name          TEXT    NOT NULL,
    epoch         BIGINT  NOT NULL CHECK (epoch >= 0),
    state_version BIGINT  NOT NULL DEFAULT 0 CHECK (state_version >= 0),
    last_seq      BIGINT  NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    log_bytes     BIGINT  NOT NULL DEFAULT 0 CHECK (log_bytes >= 0),
    state         BYTEA   NOT NULL,
    group_info    BYTEA   NOT NULL,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);

-- The devices that are leaves of each group, each with its cursor: `delivered` is the highest
-- seq of the group's log the device acknowledged (a device added by a commit starts at that
-- commit's seq: it joins from its Welcome, not from the log).
CREATE TABLE mls_members (
    group_id  BYTEA   NOT NULL REFERENCES mls_groups (id),
    user_name TEXT    NOT NULL,
    device    BIGINT  NOT NULL,
    delivered BIGINT  NOT NULL DEFAULT 0 CHECK (delivered >= 0),
    PRIMARY KEY (group_id, user_name, device),
    FOREIGN KEY (user_name, device) REFERENCES devices (user_name, device)
);
CREATE INDEX mls_members_user ON mls_members (user_name, group_id);
CREATE INDEX mls_members_device ON mls_members (user_name, device, group_id);

-- Each group's one ordered log: every MLS message (kind 0 application, 1 proposal, 2 commit)
-- stored once, with the next seq of its group (gap-free, in the order the node accepted
-- them), whatever the group's size. A row leaves when every member device has delivered it,
-- or when it is older than the retention. `msg_id` is the sender's id (a retry is found by
-- it); `blob_id` an image blob of `blobs`, deleted with the row. No foreign key on the
-- sender: a removed device's messages stay readable.
CREATE TABLE mls_log (
    group_id      BYTEA    NOT NULL REFERENCES mls_groups (id),
    seq           BIGINT   NOT NULL CHECK (seq > 0),
    msg_id        BYTEA    NOT NULL CHECK (length(msg_id) = 16),
    sender_user   TEXT     NOT NULL,
    sender_device BIGINT   NOT NULL,
    kind          SMALLINT NOT NULL CHECK (kind IN (0, 1, 2)),
    epoch         BIGINT   NOT NULL CHECK (epoch >= 0),
    body          BYTEA    NOT NULL,
    blob_id       BYTEA,
    created_at    BIGINT   NOT NULL,
    PRIMARY KEY (group_id, seq),
    UNIQUE (group_id, msg_id)
);
CREATE INDEX mls_log_created ON mls_log (created_at);
CREATE INDEX mls_log_blob ON mls_log (blob_id) WHERE blob_id IS NOT NULL;

-- Welcome messages for the devices a commit added, until each device acknowledges its own.
CREATE TABLE mls_welcomes (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_name  TEXT    NOT NULL,
    device     BIGINT  NOT NULL,
    group_id   BYTEA   NOT NULL REFERENCES mls_groups (id),
    body       BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL,
    FOREIGN KEY (user_name, device) REFERENCES devices (user_name, device)
);
CREATE INDEX mls_welcomes_device ON mls_welcomes (user_name, device, id);
CREATE INDEX mls_welcomes_created ON mls_welcomes (created_at);

-- End-to-end v2 (MLS): devices, their key packages and backed-up state, and each group's
-- public state. Keep in step with ../postgres/0005_mls.sql. Nothing here replaces a table of
-- 0001–0004: the RSA-era groups and queues stay until the switch.
--
-- A device id is a u64 stored as the i64 with the same bits (so every u64 is a device id; a
-- large one reads as negative here). Children reference their device without ON DELETE
-- CASCADE: `remove_device` deletes them explicitly, and a forgotten table fails loudly.

-- One installation of the client. `credential` is its MLS credential, `signature_key` its
-- MLS signature public key, unique across every device of every user.
CREATE TABLE devices (
    user_name     TEXT    NOT NULL REFERENCES users (name),
    device        INTEGER NOT NULL,
    credential    BLOB    NOT NULL,
    signature_key BLOB    NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (user_name, device)
) STRICT;

-- A device's MLS state, backed up entry by entry, encrypted by the client.
CREATE TABLE device_state (
    user_name TEXT    NOT NULL,
    device    INTEGER NOT NULL,
    entry     BLOB    NOT NULL,
    value     BLOB    NOT NULL,
    PRIMARY KEY (user_name, device, entry),
    FOREIGN KEY (user_name, device) REFERENCES devices (user_name, device)
) STRICT;

-- Key packages waiting to be handed out, oldest first (by id); at most one last-resort
-- package per device, which is handed out without being deleted.
CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_name   TEXT    NOT NULL,
    device      INTEGER NOT NULL,
    kp_ref      BLOB    NOT NULL UNIQUE,
    data        BLOB    NOT NULL,
    last_resort INTEGER NOT NULL CHECK (last_resort IN (FALSE, TRUE)),
    created_at  INTEGER NOT NULL,
    FOREIGN KEY (user_name, device) REFERENCES devices (user_name, device)
) STRICT;
CREATE INDEX key_packages_device ON key_packages (user_name, device, last_resort, id);
CREATE UNIQUE INDEX key_packages_one_last_resort ON key_packages (user_name, device)
    WHERE last_resort = TRUE;

-- Every key package reference a group change has used: none is used twice.
CREATE TABLE used_key_packages (
    kp_ref  BLOB    NOT NULL PRIMARY KEY,
    used_at INTEGER NOT NULL
) STRICT;

-- Each MLS group's public state (ratchet tree, context, transcript hashes: no secrets) and its
-- GroupInfo for external joins. `epoch` moves only by compare-and-set.
CREATE TABLE mls_groups (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT    NOT NULL,
    epoch      INTEGER NOT NULL CHECK (epoch >= 0),
    state      BLOB    NOT NULL,
    group_info BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) STRICT;

-- The devices that are leaves of each group.
CREATE TABLE mls_members (
    group_id  BLOB    NOT NULL REFERENCES mls_groups (id),
    user_name TEXT    NOT NULL,
    device    INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_name, device),
    FOREIGN KEY (user_name, device) REFERENCES devices (user_name, device)
) STRICT;
CREATE INDEX mls_members_user ON mls_members (user_name, group_id);

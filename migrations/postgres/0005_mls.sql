-- End-to-end v2 (MLS): devices, their key packages and backed-up state, and each group's
-- public state. Keep in step with ../sqlite/0005_mls.sql. Nothing here replaces a table of
-- 0001–0004: the RSA-era groups and queues stay until the switch.
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
-- GroupInfo for external joins. `epoch` moves only by compare-and-set.
CREATE TABLE mls_groups (
    id         BYTEA  NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT   NOT NULL,
    epoch      BIGINT NOT NULL CHECK (epoch >= 0),
    state      BYTEA  NOT NULL,
    group_info BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The devices that are leaves of each group.
CREATE TABLE mls_members (
    group_id  BYTEA  NOT NULL REFERENCES mls_groups (id),
    user_name TEXT   NOT NULL,
    device    BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_name, device),
    FOREIGN KEY (user_name, device) REFERENCES devices (user_name, device)
);
CREATE INDEX mls_members_user ON mls_members (user_name, group_id);

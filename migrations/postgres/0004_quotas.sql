-- Quotas and retention. Keep in step with ../sqlite/0004_quotas.sql. Each queue row carries
-- its sender and its size (sealed envelope + wrapped key + image blob), so a commit can sum
-- what waits for a recipient, and from one sender, from one index; rows queued before this
-- migration count their envelope and key and belong to no sender ('').
ALTER TABLE queue ADD COLUMN sender TEXT NOT NULL DEFAULT '';
ALTER TABLE queue ADD COLUMN size BIGINT NOT NULL DEFAULT 0 CHECK (size >= 0);
UPDATE queue SET size = octet_length(wrapped_key)
    + (SELECT octet_length(m.sealed) FROM messages m WHERE m.id = queue.msg_id);
CREATE INDEX queue_usage ON queue (recipient, sender, size);

-- The expiry sweep finds old messages by arrival time.
CREATE INDEX messages_created_at ON messages (created_at);

-- A sender's messages that expired unread, until the sender is told.
CREATE TABLE expiry_notices (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sender     TEXT   NOT NULL,
    msg_id     BYTEA  NOT NULL CHECK (length(msg_id) = 16),
    recipient  TEXT   NOT NULL,
    expired_at BIGINT NOT NULL,
    UNIQUE (sender, msg_id, recipient)
);
CREATE INDEX expiry_notices_expired_at ON expiry_notices (expired_at);

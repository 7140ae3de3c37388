-- Password-login throttle per account name, shared by every node on this storage, so moving
-- to another node does not reset it. Names that are not accounts get rows too (the answer for
-- an unknown name must look the same); rows quiet for long are pruned by `last_at`.
CREATE TABLE login_throttle (
    user_name  TEXT    NOT NULL PRIMARY KEY,
    failures   BIGINT  NOT NULL,
    next_at    BIGINT  NOT NULL,
    last_at    BIGINT  NOT NULL
);
CREATE INDEX login_throttle_last_at ON login_throttle (last_at);

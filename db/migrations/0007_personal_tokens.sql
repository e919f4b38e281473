-- Personal access tokens: long-lived bearer secrets for desktop clients (QGIS, GDAL)
-- that take a static header. Only the sha256 of the secret is kept (the secret is
-- 32 random bytes, so a fast hash is enough: nothing to brute-force, unlike a
-- password); `prefix` lets a user recognise a token in the list.
CREATE TABLE personal_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    token_hash   bytea NOT NULL UNIQUE,
    prefix       text NOT NULL,
    project_id   bigint REFERENCES projects(id) ON DELETE CASCADE,   -- NULL: every project of the user
    read_only    boolean NOT NULL DEFAULT true,
    token_epoch  integer NOT NULL,            -- the user's epoch when made: a password change voids it
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,                 -- updated at most once a minute
    revoked_at   timestamptz
);
CREATE INDEX personal_tokens_user_idx ON personal_tokens (user_id, id);

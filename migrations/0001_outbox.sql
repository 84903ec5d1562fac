-- The outbox: one row per accepted SMS, one row per delivery attempt.
CREATE TABLE id_sequence (
    only_row  INTEGER PRIMARY KEY CHECK (only_row = 1),
    last_seq  INTEGER NOT NULL  -- last sequence handed out; smsId = seq * nodes + node
);
INSERT INTO id_sequence (only_row, last_seq) VALUES (1, 0);

CREATE TABLE messages (
    sms_id       INTEGER PRIMARY KEY,
    source       TEXT    NOT NULL,          -- e.g. "http", "modem:/dev/ttyUSB0"
    source_ref   TEXT,                      -- the source's own id; same again = duplicate
    phone        TEXT    NOT NULL,          -- digits only
    phone_from   TEXT    NOT NULL,
    text         TEXT    NOT NULL,
    received_at  REAL    NOT NULL,          -- unix seconds, when the SMS reached the source
    expiry_base  REAL    NOT NULL,          -- max_age counts from here: received_at, or a manual retry
    accepted_at  REAL    NOT NULL,          -- unix seconds, when we committed it
    state        TEXT    NOT NULL,          -- queued | delivered | dropped | expired
    due_at       REAL    NOT NULL,          -- next attempt; while leased, the lease's end
    leased       INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    finished_at  REAL,
    final_code   TEXT                       -- drop code, or why it expired
);
CREATE UNIQUE INDEX messages_source_ref ON messages (source, source_ref) WHERE source_ref IS NOT NULL;
-- Claiming due work walks this index only: fast with a million queued messages.
CREATE INDEX messages_due ON messages (due_at, sms_id) WHERE state = 'queued';
CREATE INDEX messages_queued_expiry ON messages (expiry_base) WHERE state = 'queued';
CREATE INDEX messages_finished ON messages (finished_at) WHERE state != 'queued';
CREATE INDEX messages_phone ON messages (phone, sms_id);

CREATE TABLE attempts (
    id           INTEGER PRIMARY KEY,
    sms_id       INTEGER NOT NULL REFERENCES messages (sms_id) ON DELETE CASCADE,
    started_at   REAL    NOT NULL,
    duration     REAL    NOT NULL,
    outcome      TEXT    NOT NULL,          -- delivered | retry | dropped | rate_limited | error
    http_status  INTEGER,
    code         TEXT,                      -- drop code or key error found in the body
    error        TEXT,                      -- error class for network failures
    body         TEXT                       -- response body, cut to 4 KiB
);
CREATE INDEX attempts_sms_id ON attempts (sms_id, id);

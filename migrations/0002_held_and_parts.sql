-- Messages kept but not pushed (held), and parts of concatenated SMS waiting for each other.
ALTER TABLE messages ADD COLUMN hold_reason TEXT;     -- no_phone | undecodable | not_text
ALTER TABLE messages ADD COLUMN raw TEXT;             -- the PDU as read, for audit
ALTER TABLE messages ADD COLUMN partial INTEGER NOT NULL DEFAULT 0;  -- joined with parts missing
CREATE INDEX messages_held ON messages (source, hold_reason) WHERE state = 'held';

CREATE TABLE parts (
    id           INTEGER PRIMARY KEY,
    source       TEXT    NOT NULL,
    group_key    TEXT    NOT NULL,   -- same for every part of one message
    source_ref   TEXT    NOT NULL,   -- this part's dedup key
    seq          INTEGER NOT NULL,
    total        INTEGER NOT NULL,
    text         TEXT    NOT NULL,
    phone        TEXT    NOT NULL,
    phone_from   TEXT    NOT NULL,
    received_at  REAL    NOT NULL,
    accepted_at  REAL    NOT NULL,
    raw          TEXT,
    sms_id       INTEGER             -- the joined message, once complete; NULL while waiting
);
CREATE UNIQUE INDEX parts_source_ref ON parts (source, source_ref);
CREATE INDEX parts_waiting ON parts (source, group_key, seq) WHERE sms_id IS NULL;
CREATE INDEX parts_accepted ON parts (accepted_at);

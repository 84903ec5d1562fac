-- The partner side: the SIM inventory, Onlinesim's activations and the per-SIM, per-service ledger.
CREATE TABLE sims (
    sim_key      TEXT PRIMARY KEY,          -- ICCID, or "source:port" for boxes that report none
    iccid        TEXT,
    imsi         TEXT,
    mcc          TEXT,
    mnc          TEXT,
    country      TEXT    NOT NULL DEFAULT '',   -- Onlinesim's names ([partner.names])
    operator     TEXT    NOT NULL DEFAULT '',
    phone        TEXT    NOT NULL DEFAULT '',   -- digits with country code; '' while unknown
    phone_origin TEXT,                          -- config | sim | cnum | phonebook | ussd | sms
    source       TEXT    NOT NULL,              -- "modem", "goip:<name>", ...
    location     TEXT    NOT NULL,              -- modem name, or box and port
    state        TEXT    NOT NULL,              -- ready | no_signal | not_registered | sim_error | absent
    signal       INTEGER,                       -- CSQ 0..31; NULL unknown
    last_seen    REAL    NOT NULL,
    last_sms     REAL
);
CREATE INDEX sims_phone ON sims (phone) WHERE phone != '';

CREATE TABLE activation_sequence (
    only_row  INTEGER PRIMARY KEY CHECK (only_row = 1),
    last_seq  INTEGER NOT NULL     -- activationId = seq * ids.nodes + ids.node, never reused
);
INSERT INTO activation_sequence (only_row, last_seq) VALUES (1, 0);

CREATE TABLE activations (
    activation_id INTEGER PRIMARY KEY,
    sim_key      TEXT    NOT NULL,
    phone        TEXT    NOT NULL,
    service      TEXT    NOT NULL,          -- "rent" for rent operations
    rent         INTEGER NOT NULL,
    opened_at    REAL    NOT NULL,
    ends_at      REAL    NOT NULL,          -- the end of Onlinesim's operation
    state        TEXT    NOT NULL,          -- open | finished | stale
    status       INTEGER,                   -- FINISH_ACTIVATION status
    finished_at  REAL
);
-- Never two open activations on one SIM, whatever the code above does.
CREATE UNIQUE INDEX activations_open_sim ON activations (sim_key) WHERE state = 'open';
CREATE INDEX activations_open_phone ON activations (phone) WHERE state = 'open';

CREATE TABLE ledger (
    sim_key   TEXT    NOT NULL,
    service   TEXT    NOT NULL,
    sold      INTEGER NOT NULL DEFAULT 0,   -- status 3: never again for this service
    blocked   INTEGER NOT NULL DEFAULT 0,   -- status 1: not for this service any more
    cancels   INTEGER NOT NULL DEFAULT 0,   -- statuses 4 and 5
    refunds   INTEGER NOT NULL DEFAULT 0,   -- status 5
    PRIMARY KEY (sim_key, service)
);

-- The activation an SMS was pushed for (NULL: pushed without one, or partner side off).
ALTER TABLE messages ADD COLUMN activation_id INTEGER;

-- The outbox's fixed SQL, one named block per statement (procrastinate's sql/queries.sql).
-- A block is a line `-- name --`, one line `-- what it does`, then the statement with `?`
-- placeholders. gateway/outbox/queries.py loads this file once, at import; SQL built from
-- the number of rows or from optional filters stays in the code (see that module).

-- smsId sequence (messages) ---------------------------------------------------------------

-- last_sms_seq --
-- The smsId sequence's last value (ids made here are seq * ids.nodes + ids.node)
SELECT last_seq FROM id_sequence WHERE only_row = 1

-- set_sms_seq --
-- Move the smsId sequence to a value (above the mark file, for a replaced store)
UPDATE id_sequence SET last_seq = ? WHERE only_row = 1

-- allocate_sms_seqs --
-- Take the next ? values of the smsId sequence; returns the last one taken
UPDATE id_sequence SET last_seq = last_seq + ? WHERE only_row = 1 RETURNING last_seq

-- touch_sms_seq --
-- A write that changes nothing: the store's write probe (check_writable)
UPDATE id_sequence SET last_seq = last_seq WHERE only_row = 1

-- messages: accepting ----------------------------------------------------------------------

-- release_held --
-- Give a source's held-for-no-phone messages a phone and a new state; returns their smsIds
UPDATE messages SET state = ?, phone = ?, hold_reason = ?, due_at = ?,
       expiry_base = MAX(expiry_base, ?)
 WHERE state = 'held' AND source = ? AND hold_reason = 'no_phone'
RETURNING sms_id

-- messages: delivering ---------------------------------------------------------------------

-- claim_due --
-- Lease up to ? queued messages due by now and not past max_age, oldest due first
UPDATE messages SET leased = 1, due_at = ?
 WHERE sms_id IN (
       SELECT sms_id FROM messages INDEXED BY messages_due
        WHERE state = 'queued' AND due_at <= ? AND expiry_base >= ?
        ORDER BY due_at, sms_id LIMIT ?)
RETURNING sms_id, source, source_ref, phone, phone_from, text, received_at, accepted_at,
          state, due_at, attempts, finished_at, final_code, hold_reason, raw, partial,
          activation_id, rent_service

-- insert_attempt --
-- Record one attempt to push a message
INSERT INTO attempts (sms_id, started_at, duration, outcome, http_status, code, error, body)
VALUES (?,?,?,?,?,?,?,?)

-- record_decision --
-- Write what an attempt led to (queued again, delivered, dropped) and end its lease
UPDATE messages SET state = ?, due_at = ?, leased = 0, attempts = attempts + 1,
       finished_at = ?, final_code = ?
 WHERE sms_id = ? AND state = 'queued'

-- release_lease --
-- Give one leased message back, due at once
UPDATE messages SET leased = 0, due_at = ? WHERE sms_id = ? AND leased = 1

-- release_stale_leases --
-- At start: every lease is a dead process's; those messages are due by now at the latest
UPDATE messages SET leased = 0, due_at = MIN(due_at, ?)
 WHERE state = 'queued' AND leased = 1

-- expire_old --
-- Mark queued messages accepted before a cutoff as expired; returns their smsIds
UPDATE messages SET state = 'expired', finished_at = ?, leased = 0, final_code = 'MAX_AGE'
 WHERE state = 'queued' AND expiry_base < ?
   -- A lease that ran out (its attempt was never recorded) does not protect.
   AND (leased = 0 OR due_at < ?)
RETURNING sms_id

-- purge_finished --
-- Delete up to ? messages finished before a cutoff (their attempts go with them)
DELETE FROM messages
 WHERE sms_id IN (
       SELECT sms_id FROM messages INDEXED BY messages_finished
        WHERE state != 'queued' AND finished_at < ? LIMIT ?)

-- purge_held --
-- Delete held messages held since before a cutoff, except those of one hold reason; a release
-- (a phone given, held again for another reason) sets expiry_base, so the age counts from it
DELETE FROM messages WHERE state = 'held' AND hold_reason != ? AND expiry_base < ?

-- purge_joined_parts --
-- Delete parts already joined into a message, accepted before a cutoff
DELETE FROM parts WHERE sms_id IS NOT NULL AND accepted_at < ?

-- messages: reading ------------------------------------------------------------------------

-- next_due_at --
-- When the next claimable message is due (claim_due's filter, without the time)
SELECT due_at FROM messages INDEXED BY messages_due
 WHERE state = 'queued' AND expiry_base >= ?
 ORDER BY due_at, sms_id LIMIT 1

-- count_by_state --
-- How many messages are in each state
SELECT state, COUNT(*) FROM messages GROUP BY state

-- last_delivered_at --
-- When the last delivered message was delivered
SELECT MAX(finished_at) FROM messages WHERE state = 'delivered'

-- queued_count --
-- How many messages are queued
SELECT COUNT(*) FROM messages WHERE state = 'queued'

-- oldest_queued_received_at --
-- When the oldest queued message was received
SELECT MIN(received_at) FROM messages WHERE state = 'queued'

-- recent_drops --
-- The last ? messages dropped or expired, newest first
SELECT sms_id, phone, phone_from, final_code, finished_at, state FROM messages
 WHERE state IN ('dropped', 'expired') ORDER BY finished_at DESC LIMIT ?

-- get_message --
-- One message by smsId
SELECT sms_id, source, source_ref, phone, phone_from, text, received_at, accepted_at,
       state, due_at, attempts, finished_at, final_code, hold_reason, raw, partial,
       activation_id, rent_service
  FROM messages WHERE sms_id = ?

-- attempts_for --
-- A message's attempts, oldest first
SELECT sms_id, started_at, duration, outcome, http_status, code, error, body
  FROM attempts WHERE sms_id = ? ORDER BY id

-- parts of concatenated SMS ----------------------------------------------------------------

-- find_part --
-- A part by its source's reference; its sms_id is set once its message is joined
SELECT sms_id FROM parts WHERE source = ? AND source_ref = ?

-- insert_part --
-- Commit one part as it arrives
INSERT INTO parts (source, group_key, source_ref, seq, total, text, phone, phone_from,
                   received_at, accepted_at, raw, units)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?)

-- waiting_parts --
-- The parts of one group not joined yet, by sequence number then arrival
SELECT id, source, group_key, seq, total, text, phone, phone_from, received_at, units, raw
  FROM parts WHERE source = ? AND group_key = ? AND sms_id IS NULL
 ORDER BY seq, id

-- stale_groups --
-- The groups whose first waiting part was accepted before a cutoff
SELECT source, group_key FROM parts WHERE sms_id IS NULL
 GROUP BY source, group_key HAVING MIN(accepted_at) < ?

-- mark_part_joined --
-- Point one part at the message it was joined into
UPDATE parts SET sms_id = ? WHERE id = ?

-- partner: activations ---------------------------------------------------------------------

-- last_activation_seq --
-- The activationId sequence's last value
SELECT last_seq FROM activation_sequence

-- set_activation_seq --
-- Move the activationId sequence to a value (above its mark file, for a replaced store)
UPDATE activation_sequence SET last_seq = ?

-- next_activation_seq --
-- Take the next value of the activationId sequence
UPDATE activation_sequence SET last_seq = last_seq + 1 RETURNING last_seq

-- insert_activation --
-- Commit a new open activation
INSERT INTO activations (activation_id, sim_key, phone, service, rent, opened_at, ends_at,
                         state, status, finished_at)
VALUES (?,?,?,?,?,?,?,'open',NULL,NULL)

-- finish_activation --
-- Write an activation's end: its state, FINISH status and when
UPDATE activations SET state = ?, status = ?, finished_at = ? WHERE activation_id = ?

-- get_activation --
-- One activation by activationId
SELECT activation_id, sim_key, phone, service, rent, opened_at, ends_at, state, status,
       finished_at
  FROM activations WHERE activation_id = ?

-- partner: ledger and inventory ------------------------------------------------------------

-- save_ledger_entry --
-- Insert or replace the ledger entry of one SIM and service
INSERT INTO ledger (sim_key, service, sold, blocked, cancels, refunds) VALUES (?,?,?,?,?,?)
    ON CONFLICT (sim_key, service) DO UPDATE SET
       sold = excluded.sold, blocked = excluded.blocked,
       cancels = excluded.cancels, refunds = excluded.refunds

-- ledger --
-- Every ledger entry
SELECT sim_key, service, sold, blocked, cancels, refunds FROM ledger

-- save_sim --
-- Insert or update one SIM of the inventory; a SIM's last_sms is kept when none is given
INSERT INTO sims (sim_key, source, location, state, last_seen, iccid, imsi, mcc, mnc, country,
                  operator, phone, phone_origin, signal, last_sms)
VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
    ON CONFLICT (sim_key) DO UPDATE SET
       source = excluded.source, location = excluded.location, state = excluded.state,
       last_seen = excluded.last_seen, iccid = excluded.iccid, imsi = excluded.imsi,
       mcc = excluded.mcc, mnc = excluded.mnc, country = excluded.country,
       operator = excluded.operator, phone = excluded.phone,
       phone_origin = excluded.phone_origin, signal = excluded.signal,
       last_sms = COALESCE(excluded.last_sms, sims.last_sms)

-- list_sims --
-- The whole inventory, by source then location
SELECT sim_key, source, location, state, last_seen, iccid, imsi, mcc, mnc, country, operator,
       phone, phone_origin, signal, last_sms
  FROM sims ORDER BY source, location

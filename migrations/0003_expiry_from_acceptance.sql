-- max_age counts from when the gateway accepted a message, not from the network's timestamp
-- (an SMSC with a wrong clock made fresh messages expire unsent). Messages still waiting move
-- their expiry base forward to their acceptance; a manual retry's later base is kept.
UPDATE messages SET expiry_base = MAX(expiry_base, accepted_at) WHERE state IN ('queued', 'held');

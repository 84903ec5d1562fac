-- Delivery follows activations ([partner] on): a message accepted on a number with an open rent
-- activation is pushed to the rent URL with that activation's service in the body's `service`.
ALTER TABLE messages ADD COLUMN rent_service TEXT;    -- NULL: PUSH_SMS as ever

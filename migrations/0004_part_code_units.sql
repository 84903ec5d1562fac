-- A part's text as UTF-16 code units, when it holds half of a surrogate pair a network split
-- between two parts (an emoji across the boundary); joined as code units, the pair comes back.
-- TEXT cannot hold a lone surrogate, so `text` keeps U+FFFD there for display.
ALTER TABLE parts ADD COLUMN units BLOB;

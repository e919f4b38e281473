-- Big scans fan out: a parent job waits (heartbeat NULL) while its tiles run as child jobs.
ALTER TABLE jobs ADD COLUMN parent_id text REFERENCES jobs(identifier) ON DELETE CASCADE;
ALTER TABLE jobs ADD COLUMN tile_index integer;
CREATE INDEX jobs_parent_idx ON jobs (parent_id) WHERE parent_id IS NOT NULL;

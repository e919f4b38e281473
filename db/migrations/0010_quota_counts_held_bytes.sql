-- The upload quota counts the bytes a user holds now: their unfinished uploads plus
-- the stored files of scans they uploaded (issue 15). Deleting a scan gives its bytes
-- back; a completed upload no longer counts for the account's lifetime.
ALTER TABLE scan_files ADD COLUMN uploaded_by bigint REFERENCES users(id) ON DELETE SET NULL;
UPDATE scan_files f SET uploaded_by = u.owner_id
  FROM uploads u
 WHERE u.completed_at IS NOT NULL
   AND f.storage_uri LIKE 'scans/' || f.scan_id || '/' || left(u.id, 8) || '-%';
CREATE INDEX scan_files_uploaded_by_idx ON scan_files (uploaded_by) WHERE uploaded_by IS NOT NULL;

-- An upload's scratch file is always uploads/<id>.part in the workspace (workspace.upload):
-- the column that named it, and once pointed at the published object, goes.
ALTER TABLE uploads DROP COLUMN storage_path;

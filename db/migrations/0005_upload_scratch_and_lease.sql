-- An upload's storage_path is its scratch file in the workspace (uploads/<id>.part),
-- never the stored object it became: that belongs to its scan (scan_files) and goes
-- only with it. Completed uploads of earlier versions pointed at the object; point
-- them back at their (long gone) scratch name so terminating them cannot touch it.
UPDATE uploads SET storage_path = 'uploads/' || id || '.part' WHERE completed_at IS NOT NULL;

-- One writer per upload without pinning a database connection for the whole body:
-- a lease (who, until when), renewed while the body is read.
ALTER TABLE uploads ADD COLUMN writer text;
ALTER TABLE uploads ADD COLUMN writer_until timestamptz;

-- What the upload check and ingestion found suspect in a scan's files (issue 30): one
-- sentence each (no ground class, a single point, a compound WKT of which only the
-- horizontal part is used, a damaged LAZ chunk table, ...). Shown in the scan's item,
-- its report and the upload's completion (Canopy-Warnings).
ALTER TABLE scans ADD COLUMN warnings jsonb NOT NULL DEFAULT '[]';
